import Glibc

/// This process's own figures, as Prometheus' client libraries export them (`process_*`): read from /proc when
/// asked, nothing kept.
public struct ProcessStats: Sendable, Equatable {
    /// When the process started, in seconds since the epoch.
    public var startTime: Double
    /// User and system CPU time.
    public var cpuSeconds: Double
    public var residentBytes: Double
    public var virtualBytes: Double
    public var openFileDescriptors: Int
    /// The soft limit on open descriptors (RLIMIT_NOFILE).
    public var maxFileDescriptors: Int

    /// nil where /proc cannot be read.
    public static func current() -> ProcessStats? {
        guard let stat = readSmallFile("/proc/self/stat"), let boot = bootTime() else { return nil }
        // The command name (field 2) may hold spaces and parentheses: the fields are counted after its last ')'.
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state): field n is fields[n - 3].
        func field(_ n: Int) -> Double? { fields.count > n - 3 ? Double(fields[n - 3]) : nil }
        guard let utime = field(14), let stime = field(15), let start = field(22), let vsize = field(23), let rss = field(24) else {
            return nil
        }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        var limit = rlimit()
        let maxFDs = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(clamping: limit.rlim_cur) : 0
        return ProcessStats(
            startTime: boot + start / ticks, cpuSeconds: (utime + stime) / ticks, residentBytes: rss * page, virtualBytes: vsize,
            openFileDescriptors: openDescriptors(), maxFileDescriptors: maxFDs)
    }

    /// `btime` of /proc/stat: when the machine booted, in seconds since the epoch.
    static func bootTime() -> Double? {
        guard let text = readSmallFile("/proc/stat") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") { return Double(line.dropFirst(6)) }
        return nil
    }

    /// The entries of /proc/self/fd, less the one the count itself holds open.
    static func openDescriptors() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(dir) }
        var n = 0
        while let entry = readdir(dir) {
            if entry.pointee.d_name.0 != 46 { n += 1 }  // not "." or ".."
        }
        return max(0, n - 1)
    }

    /// A /proc file whole (they are small and their size is unknown until read).
    static func readSmallFile(_ path: String) -> String? {
        guard let fd = try? FileDescriptor.open(path, O_RDONLY | O_CLOEXEC) else { return nil }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { try? fd.read(into: $0) } ?? 0
            if n <= 0 { break }
            bytes += chunk[..<n]
            if bytes.count > 1 << 20 { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
