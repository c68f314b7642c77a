import ArgumentParser
import Engine

/// `portcullis cluster-schema`: the fleet's tables, as SQL for the database's owner to run once (the daemons' role
/// never creates or alters tables).
struct ClusterSchemaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster-schema",
        abstract: "Print the SQL that makes the fleet's shared tables in PostgreSQL (run it once, as the database's owner).",
        discussion: "Example: portcullis cluster-schema --role portcullis | psql -d portcullis -U postgres"
    )

    @Option(help: "The daemons' role: granted what they use (read and append bans, announce themselves) and no more.")
    var role: String?

    func validate() throws {
        if let role, !ClusterSchema.isRoleName(role) {
            throw ValidationError("--role '\(role)' is not a plain role name (lower-case letters, digits and '_', not starting with a digit)")
        }
    }

    func run() throws {
        print(ClusterSchema.sql(role: role), terminator: "")
    }
}
