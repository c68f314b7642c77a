/// A JSON object written field by field (the API's documents are small and flat; Foundation's encoder would
/// cost more than the rest of a request).
public struct JSONObject {
    private var out = "{"
    private var first = true

    public init() {}

    private mutating func key(_ k: String) {
        if !first { out += "," }
        first = false
        out += JSONText.quote(k)
        out += ":"
    }

    public mutating func string(_ k: String, _ v: String) { key(k); out += JSONText.quote(v) }
    public mutating func optionalString(_ k: String, _ v: String?) { key(k); out += v.map(JSONText.quote) ?? "null" }
    public mutating func int(_ k: String, _ v: Int) { key(k); out += String(v) }
    public mutating func double(_ k: String, _ v: Double) {
        key(k)
        out += v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }
    public mutating func bool(_ k: String, _ v: Bool) { key(k); out += v ? "true" : "false" }
    public mutating func raw(_ k: String, _ json: String) { key(k); out += json }
    public mutating func strings(_ k: String, _ v: [String]) { key(k); out += JSONObject.array(v.map(JSONText.quote)) }

    public var text: String { out + "}" }

    public static func array(_ elements: [String]) -> String { "[" + elements.joined(separator: ",") + "]" }
}
