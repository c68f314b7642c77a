import Foundation
import Platform
import Testing

@testable import Engine

/// `GET /cluster`, the metrics and `/health` of a node whose PostgreSQL cannot be reached: local banning goes on,
/// the changes queue in the store and the reason is told (IntegrationTests' ClusterTests run a real PostgreSQL).
@Suite struct ClusterAPITests {
    @Test func aNodeOnItsOwnSaysSo() throws {
        let d = try LiveDaemon()
        defer { d.stop() }
        let r = try d.unix.request("GET", "/cluster")
        #expect(r.status == 200 && r.text == #"{"enabled":false}"#, "\(r.text)")
        #expect(!(try d.unix.request("GET", "/metrics")).text.contains("portcullis_cluster_"))
    }

    @Test func unreachablePostgreSQLQueuesAndTells() throws {
        let d = try LiveDaemon(
            api: "[cluster]\nconninfo = host=/nonexistent/portcullis-test port=5432 dbname=fleet user=portcullis\nnode = t1\nshare = dovecot\n")
        defer { d.stop() }
        var cluster: [String: Any] = [:]
        for _ in 0..<100 {
            cluster = try d.unix.request("GET", "/cluster").json
            if cluster["error"] is String { break }
            usleep(50_000)
        }
        #expect(cluster["enabled"] as? Bool == true && cluster["node"] as? String == "t1" && cluster["connected"] as? Bool == false)
        #expect((cluster["error"] as? String ?? "").contains("/nonexistent/portcullis-test"), "\(cluster)")
        #expect(cluster["share"] as? String == "dovecot" && cluster["apply"] as? String == "all")

        // Bans go on, and wait in the outbox for PostgreSQL.
        #expect(try d.unix.request("POST", "/jails/dovecot/bans", body: #"{"ip": "203.0.113.9"}"#).status == 201)
        #expect(try d.unix.request("DELETE", "/bans/203.0.113.9").status == 200)
        for _ in 0..<100 where (try d.unix.request("GET", "/cluster").json["queued"] as? Int) != 2 { usleep(50_000) }
        #expect(try d.unix.request("GET", "/cluster").json["queued"] as? Int == 2)
        #expect(try d.daemon.store!.clusterOutbox().map { "\($0.kind) \($0.ip)" } == ["ban 203.0.113.9", "unban 203.0.113.9"])

        let health = try d.unix.request("GET", "/health").json
        #expect(health["status"] as? String == "degraded")
        #expect((health["problems"] as? [String] ?? []).contains { $0.hasPrefix("cluster: not connected to PostgreSQL") }, "\(health)")
        let metrics = try d.unix.request("GET", "/metrics").text
        #expect(metrics.contains("portcullis_cluster_connected{node=\"t1\"} 0"))
        #expect(metrics.contains("portcullis_cluster_queue{node=\"t1\"} 2"))
    }
}
