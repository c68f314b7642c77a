import FoundationEssentials
import Glibc

/// The ports something listens on in this network namespace, from /proc/net/{tcp,tcp6,udp,udp6}.
public enum ListeningPorts {
    public static func current(procNet: String = "/proc/net") -> (tcp: Set<UInt16>, udp: Set<UInt16>) {
        var tcp = Set<UInt16>(), udp = Set<UInt16>()
        for (file, isTCP) in [("tcp", true), ("tcp6", true), ("udp", false), ("udp6", false)] {
            guard let text = try? String(contentsOfFile: procNet + "/" + file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let cols = line.split(separator: " ")
                guard cols.count > 3, let colon = cols[1].lastIndex(of: ":"),
                    let port = UInt16(cols[1][cols[1].index(after: colon)...], radix: 16)
                else { continue }
                // TCP: state 0A is LISTEN. UDP: a bound socket (07) receives.
                if isTCP { if cols[3] == "0A" { tcp.insert(port) } } else if cols[3] == "07" { udp.insert(port) }
            }
        }
        return (tcp, udp)
    }
}
