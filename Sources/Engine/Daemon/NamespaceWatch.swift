import Glibc

/// Notices that the network namespace Portcullis runs in was orphaned.
///
/// As a sidecar (compose: `network_mode: service:mail`) Portcullis guards the mail container's network namespace.
/// When that container stops or restarts, Docker removes its interfaces, and a restarted one gets a new namespace:
/// Portcullis would go on filtering a namespace no traffic reaches, and cannot join the new one from inside.
/// Exiting lets the restart policy start it again, in the mail container's current namespace, with its bans
/// restored from the database. Orphaned means: a namespace that had an interface besides loopback has had none
/// for `grace` seconds. One that never had any (a private test namespace, `network_mode: none`) is left alone.
public struct NamespaceWatch {
    public let grace: Double
    private let interfaces: () -> [String]
    private(set) var sawNetwork = false
    private var lostSince: Double?
    private var lastSeen: [String] = []

    /// `interfaces`: the names of the namespace's interfaces other than loopback (tests give their own).
    public init(grace: Double, interfaces: @escaping () -> [String] = NamespaceWatch.nonLoopbackInterfaces) {
        self.grace = grace
        self.interfaces = interfaces
    }

    /// Looks once. Returns why the namespace counts as orphaned, or nil.
    public mutating func check(now: Double) -> String? {
        let names = interfaces()
        if !names.isEmpty {
            sawNetwork = true
            lostSince = nil
            lastSeen = names
            return nil
        }
        guard sawNetwork else { return nil }
        let since = lostSince ?? now
        lostSince = since
        guard now - since >= grace else { return nil }
        return "this network namespace has had no interface but loopback for \(Int((now - since).rounded())) s "
            + "(\(lastSeen.joined(separator: ", ")) removed): the container whose network Portcullis shares "
            + "(network_mode: service:…) stopped or restarted, and its new namespace cannot be joined from here"
    }

    /// Interfaces of the calling thread's network namespace other than loopback. A failed reading counts as a
    /// network (never as orphaned).
    public static func nonLoopbackInterfaces() -> [String] {
        var names: [String] = []
        let read = SelfAddresses.forEachInterface { ifa in
            if ifa.ifa_flags & UInt32(IFF_LOOPBACK) == 0, let n = ifa.ifa_name {
                let name = String(cString: n)
                if !names.contains(name) { names.append(name) }
            }
        }
        return read ? names : ["(getifaddrs failed)"]
    }
}
