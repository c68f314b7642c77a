import Foundation
import TestSupport
import Testing

@testable import Engine

/// `[cluster]` in portcullis.conf, the outbox in the store, and the SQL the link sends: the parts of the fleet that
/// need no PostgreSQL (IntegrationTests' ClusterTests run the fleet on a real one).
@Suite struct ClusterSettingsTests {
    static func tree() throws -> TempDir {
        let dir = TempDir()
        let repoConfig = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config").path
        try FileManager.default.copyItem(atPath: repoConfig, toPath: dir.path + "/conf")
        return dir
    }

    @Test func readsTheSection() throws {
        let dir = try Self.tree()
        dir.write(
            "conf/portcullis.local",
            "[cluster]\nconninfo = host=db.example.org dbname=portcullis user=portcullis sslmode=verify-full\npassword_file = /run/secrets/pg\n"
                + "node = mx1.example\nshare = dovecot, sshd\napply = none\nqueue = 500\n")
        let config = LoadedConfig.load(dir.path + "/conf")
        #expect(!config.hasErrors, "\(config.diagnostics.map(\.text))")
        let c = config.settings.cluster
        #expect(c.enabled && c.node == "mx1.example" && c.passwordFile == "/run/secrets/pg" && c.queue == 500)
        #expect(c.share == .jails(["dovecot", "sshd"]) && c.share.contains("sshd") && !c.share.contains("postfix"))
        #expect(c.apply == .none && !c.apply.contains("dovecot"))
        #expect(ClusterSettings.JailSelection.parse("all") == .all && ClusterSettings.JailSelection.parse("") == .none)
    }

    @Test func withoutConninfoTheNodeIsAlone() throws {
        let dir = try Self.tree()
        #expect(!LoadedConfig.load(dir.path + "/conf").settings.cluster.enabled)
        dir.write("conf/portcullis.local", "[cluster]\nnode = mx1\n")
        #expect(!LoadedConfig.load(dir.path + "/conf").settings.cluster.enabled)
    }

    @Test func errorsNameTheFileAndLine() throws {
        let dir = try Self.tree()
        for (line, message) in [
            ("conninfo = host=db password=hunter2", "conninfo holds a password: put it in a file of its own"),
            ("conninfo = postgresql://portcullis:hunter2@db/fleet", "conninfo holds a password"),
            ("conninfo = host=db nosuchoption=1", "not a connection string libpq accepts: invalid connection option \"nosuchoption\""),
            ("node = mx 1", "node 'mx 1' is not a node name"),
            ("queue = 0", "queue must be a number of changes from 1"),
        ] {
            dir.write("conf/portcullis.local", "[cluster]\n\(line)\n")
            let text = LoadedConfig.load(dir.path + "/conf").diagnostics.map(\.text).joined(separator: "\n")
            #expect(text.contains("portcullis.local:2") && text.contains(message), "\(line): \(text)")
        }
    }

    @Test func passwordFile() throws {
        let dir = TempDir()
        var c = ClusterSettings()
        c.passwordFile = dir.write("pw", "s3cret\r\nignored\n")
        #expect(try c.readPassword() == "s3cret")
        c.passwordFile = dir.write("empty", "\n")
        #expect(throws: ConfigError.self) { try c.readPassword() }
        c.passwordFile = dir.path + "/missing"
        do {
            _ = try c.readPassword()
            Issue.record("a missing password file was read")
        } catch {
            #expect(error.message.contains("password_file \(dir.path)/missing cannot be read"))
        }
        c.passwordFile = ""
        #expect(try c.readPassword() == nil)
    }

    @Test func arrayLiteralsEscape() {
        #expect(ClusterLink.arrayLiteral([]) == "{}")
        #expect(ClusterLink.arrayLiteral(["a", nil, "say \"hi\" \\ bye", "{x,y}"]) == #"{"a",NULL,"say \"hi\" \\ bye","{x,y}"}"#)
    }

    @Test func schemaAndRoles() {
        #expect(ClusterSchema.isRoleName("portcullis") && ClusterSchema.isRoleName("_fleet_2"))
        #expect(
            !ClusterSchema.isRoleName("Portcullis") && !ClusterSchema.isRoleName("a;drop") && !ClusterSchema.isRoleName("2x") && !ClusterSchema.isRoleName(""))
        let sql = ClusterSchema.sql(role: "fleet")
        #expect(sql.contains("GRANT SELECT, INSERT ON portcullis_bans TO fleet;") && !sql.contains("UPDATE ON portcullis_bans"))
        #expect(!ClusterSchema.sql(role: nil).contains("GRANT"))
    }

    @Test func outboxSurvivesAReopen() throws {
        let dir = TempDir()
        let path = dir.path + "/db.sqlite3"
        var store: BanStore? = try BanStore(path: path)
        let changes = [
            ClusterChange(
                token: "t1", kind: .ban, jail: "dovecot", ip: IPNetwork("192.0.2.1")!, bannedAt: 1000, expiresAt: 2000, failures: 3, reason: "3 failures"),
            ClusterChange(
                token: "t2", kind: .ban, jail: "sshd", ip: IPNetwork("2001:db8::/64")!, bannedAt: 1001, expiresAt: nil, failures: 0, reason: "by request"),
            ClusterChange(
                token: "t3", kind: .unban, jail: "dovecot", ip: IPNetwork("192.0.2.1")!, bannedAt: 1002, expiresAt: nil, failures: 0, reason: "by request"),
        ]
        let stored = try store!.addToClusterOutbox(changes)
        #expect(stored.map(\.localID).allSatisfy { $0 > 0 })
        try store!.setClusterLastID(42)
        store!.close()
        store = try BanStore(path: path)
        let back = try store!.clusterOutbox()
        #expect(back == stored)
        #expect(try store!.clusterLastID() == 42)
        try store!.removeFromClusterOutbox([stored[0].localID, stored[2].localID])
        #expect(try store!.clusterOutbox().map(\.token) == ["t2"])
        try store!.setClusterLastID(nil)
        #expect(try store!.clusterLastID() == nil)
    }
}
