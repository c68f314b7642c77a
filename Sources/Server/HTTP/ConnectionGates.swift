/// The capacities every loop shares.
struct ConnectionGates: Sendable {
    let tcp: ConnectionGate
    let unix: ConnectionGate
    let perClient: ClientCounts
}
