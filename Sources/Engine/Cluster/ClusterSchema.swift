/// The fleet's tables in PostgreSQL. The daemons never create or alter them: the schema is made once by the
/// database's owner (`portcullis cluster-schema --role portcullis | psql …`), and the daemons' role is granted what
/// they use and no more (read and append bans; announce itself), so that a stolen node password cannot rewrite or
/// erase the fleet's history.
public enum ClusterSchema {
    /// Notified after every batch of rows: the listeners then read by id what they have not seen.
    public static let channel = "portcullis_bans"
    /// Taken (per transaction) by every writer before it inserts: ids are then given and committed in the same
    /// order, and a reader that has seen id n has seen every id below it — catching up by id loses nothing.
    public static let writeLock = 7_428_061_513

    /// A role name the SQL below can hold unquoted.
    public static func isRoleName(_ s: String) -> Bool {
        guard let first = s.utf8.first, (97...122).contains(first) || first == 95 else { return false }
        return s.utf8.count <= 63 && s.utf8.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == 95 }
    }

    /// The schema (idempotent: it can be run again), with the grants for `role` when given.
    public static func sql(role: String?) -> String {
        var text = """
            -- Portcullis: the fleet's shared bans (schema 1). Run as the database's owner, not as the daemons' role.
            CREATE TABLE IF NOT EXISTS portcullis_bans (
                id          bigserial PRIMARY KEY,
                kind        text NOT NULL CHECK (kind IN ('ban', 'unban')),
                jail        text NOT NULL,
                ip          cidr NOT NULL,
                origin      text NOT NULL,
                token       text NOT NULL,
                banned_at   timestamptz NOT NULL,
                -- NULL: a permanent ban (and every unban). Written with the database's clock: nodes' clocks may differ.
                expires_at  timestamptz,
                failures    integer NOT NULL DEFAULT 0,
                reason      text NOT NULL DEFAULT '',
                created_at  timestamptz NOT NULL DEFAULT now(),
                UNIQUE (origin, token)
            );
            CREATE INDEX IF NOT EXISTS portcullis_bans_latest ON portcullis_bans (jail, ip, id);
            CREATE TABLE IF NOT EXISTS portcullis_nodes (
                node        text PRIMARY KEY,
                last_seen   timestamptz NOT NULL,
                version     text NOT NULL,
                last_id     bigint NOT NULL DEFAULT 0
            );

            """
        if let role {
            text += """
                -- The daemons' role: read and append bans, announce itself; no UPDATE or DELETE of bans.
                GRANT SELECT, INSERT ON portcullis_bans TO \(role);
                GRANT USAGE ON SEQUENCE portcullis_bans_id_seq TO \(role);
                GRANT SELECT, INSERT, UPDATE ON portcullis_nodes TO \(role);

                """
        }
        return text
    }
}
