// libFuzzer target for the HTTP/1.1 request parser (Sources/Server/HTTP/HTTPParser.swift, compiled in alone).
//
//   swiftc -sanitize=fuzzer,address -parse-as-library -O Sources/Server/HTTP/HTTPParser.swift \
//       fuzz/HTTPParserFuzz.swift -o .build/http-parser-fuzz
//   .build/http-parser-fuzz -max_total_time=60 fuzz/corpus
//
// Besides crashes, it checks a property: framing must not depend on how the bytes arrive. The input is parsed
// once whole and once cut into pieces (sizes taken from the input's first byte); both must give the same
// requests and the same error.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var limits = HTTPLimits()
    // Small limits reach the limit paths with small inputs.
    limits.maxHeaderBytes = 512
    limits.maxBodyBytes = 256
    limits.maxHeaderCount = 8

    let whole = run(bytes, pieces: [bytes.count], limits: limits)
    var pieces: [Int] = []
    var seed = UInt32(bytes.first ?? 1) | 1
    var left = bytes.count
    while left > 0 {
        seed = seed &* 1_103_515_245 &+ 12345
        let n = min(left, Int(seed >> 16) % 17 + 1)
        pieces.append(n)
        left -= n
    }
    let chunked = run(bytes, pieces: pieces, limits: limits)
    if whole != chunked {
        fatalError("framing depends on chunking:\n whole:   \(whole)\n chunked: \(chunked)")
    }
    return 0
}

private struct Outcome: Equatable, CustomStringConvertible {
    var requests: [HTTPRequest] = []
    var error: HTTPParseError?
    var description: String { "\(requests.map { "\($0.method) \($0.target) body=\($0.body.count)" }) error=\(String(describing: error))" }
}

private func run(_ bytes: [UInt8], pieces: [Int], limits: HTTPLimits) -> Outcome {
    var parser = HTTPParser(limits: limits)
    var outcome = Outcome()
    var offset = 0
    for n in pieces {
        parser.feed(Array(bytes[offset..<(offset + n)]))
        offset += n
        while true {
            do {
                guard let event = try parser.next() else { break }
                if case .request(let r) = event {
                    precondition(r.body.count <= limits.maxBodyBytes)
                    outcome.requests.append(r)
                }
            } catch {
                outcome.error = error
                return outcome
            }
        }
    }
    // Bytes still waiting must be less than a head and a body; more would mean unbounded buffering.
    precondition(parser.buffered <= limits.maxHeaderBytes + limits.maxBodyBytes + 4 + 256 * 1024)
    return outcome
}
