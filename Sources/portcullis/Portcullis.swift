import ArgumentParser
import Engine
import FoundationEssentials
import Glibc
import Platform

@main
struct Portcullis: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portcullis",
        abstract: "A fail2ban-compatible intrusion-prevention daemon.",
        version: PortcullisVersion.string,
        subcommands: [
            ServeCommand.self, CheckCommand.self, RegexCommand.self, StatusCommand.self, SetCommand.self,
            UnbanCommand.self, BansCommand.self, GetCommand.self, AllowlistCommand.self, ReloadCommand.self, HealthCommand.self,
            ClusterSchemaCommand.self,
        ]
    )

    /// As ArgumentParser's, but a usage error exits with 2 (fail2ban-client's habit and the documented code)
    /// rather than 64, and a command's failure is said once, here, with its exit code: the one way out.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let failure as CommandFailure {
            StandardError.write("portcullis: " + failure.message + "\n")
            Glibc.exit(failure.code)
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                StandardError.write((fullMessage(for: error) + "\n"))
                Glibc.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// Options every command that reads the configuration tree shares.
struct ConfigOptions: ParsableArguments {
    @Option(name: [.customShort("c"), .long], help: "Configuration directory in fail2ban layout (e.g. /etc/fail2ban).")
    var config: String = "/etc/portcullis"
}

/// A command that could not do its work: what `main` says ("portcullis: …") and the exit code it ends with.
struct CommandFailure: Error {
    let message: String
    let code: Int32
}

/// Ends the command with `message` and `code` (through `main`).
func fail(_ message: String, code: Int32 = 1) throws -> Never {
    throw CommandFailure(message: message, code: code)
}
