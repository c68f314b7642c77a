import CHTTPClient
import Foundation
import TestSupport
import Testing

@testable import Engine

/// `webhook[...]` options, the signature and the retry policy, and the `[api]` settings of the event feed and of
/// `/metrics`: configuration, without a network.
@Suite struct WebhookSpecTests {
    func spec(_ text: String) throws -> WebhookSpec {
        let (name, options) = try OptionSyntax.extract(text)
        return try WebhookSpec(ActionSpec(name: name, options: options), index: 1)
    }

    @Test func optionsAndDefaults() throws {
        let s = try spec(#"webhook[url="https://user:pw@hooks.example.com:8443/p?token=x", secret_file=/run/secrets/hook]"#)
        #expect(s.host == "hooks.example.com:8443" && s.events == [.ban] && s.timeout == 10 && s.queue == 1000 && s.attempts == 10)
        let t = try spec(
            #"webhook[url="http://127.0.0.1/h", secret_file=/s, events="ban, unban", timeout=2m, backoff=0.5, queue=5, attempts=3, cafile=/ca.pem]"#)
        #expect(t.events == [.ban, .unban] && t.timeout == 120 && t.backoff == 0.5 && t.queue == 5 && t.attempts == 3 && t.cafile == "/ca.pem")
    }

    @Test(arguments: [
        (#"webhook[secret_file=/s]"#, "url is missing"), (#"webhook[url="ftp://x/", secret_file=/s]"#, "http:// or https://"),
        (#"webhook[url="http://x/"]"#, "secret_file is missing"),
        (#"webhook[url="http://x/", secret_file=/s, events="ban,failure"]"#, "'failure' is not ban or unban"),
        (#"webhook[url="http://x/", secret_file=/s, timeout=0]"#, "timeout must be from"),
        (#"webhook[url="http://x/", secret_file=/s, queue=0]"#, "queue must be"),
        (#"webhook[url="http://x/", secret_file=/s, attempts=many]"#, "attempts must be"), (#"webhook[url="http:///p", secret_file=/s]"#, "no host"),
    ])
    func badOptionsSayWhich(_ text: String, _ message: String) {
        #expect(throws: ConfigError.self) { try spec(text) }
        do { _ = try spec(text) } catch let error as ConfigError { #expect(error.message.contains(message), "\(error.message)") } catch {}
    }

    @Test func aBadWebhookNamesTheJailFileAndLine() throws {
        let dir = TempDir()
        let repoConfig = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config").path
        try FileManager.default.copyItem(atPath: repoConfig, toPath: dir.path + "/conf")
        dir.write(
            "conf/jail.d/test.local",
            "[dovecot]\nenabled = true\nlogpath = /dev/null\nbanaction = dry-run\naction = webhook[url=\"http://x/\", secret_file=\(dir.path)/missing]\n")
        let config = LoadedConfig.load(dir.path + "/conf")
        let text = config.diagnostics.map(\.text).joined(separator: "\n")
        #expect(text.contains("test.local:5") && text.contains("cannot read secret_file \(dir.path)/missing"), "\(text)")
        #expect(config.jails.isEmpty)
    }

    @Test func eventAndMetricsSettingsOfTheAPI() throws {
        let dir = TempDir()
        let repoConfig = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config").path
        try FileManager.default.copyItem(atPath: repoConfig, toPath: dir.path + "/conf")
        dir.write("conf/portcullis.local", "[api]\nevents_keepalive = 2s\nevents_buffer = 65536\nmetrics_kernel_interval = 0\n")
        let api = LoadedConfig.load(dir.path + "/conf").settings.api
        #expect(api.eventsKeepAlive == 2 && api.eventsBuffer == 65536 && api.metricsKernelInterval == 0)
        for (line, message) in [
            ("events_buffer = 10", "events_buffer must be a number of bytes from 4096"), ("events_keepalive = 0", "events_keepalive must be positive"),
            ("metrics_kernel_interval = 2d", "metrics_kernel_interval must be from 0 to 1d"),
        ] {
            dir.write("conf/portcullis.local", "[api]\n\(line)\n")
            let text = LoadedConfig.load(dir.path + "/conf").diagnostics.map(\.text).joined(separator: "\n")
            #expect(text.contains("portcullis.local:2") && text.contains(message), "\(text)")
        }
    }

    @Test func signatureIsHMACSHA256() {
        // RFC 4231, test case 2.
        #expect(
            WebhookDispatcher.hmacHex(key: Array("Jefe".utf8), Array("what do ya want for nothing?".utf8))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func retriesBackOffWithJitterAndClassify() {
        #expect(WebhookDispatcher.delay(attempt: 1, base: 1, random: 1) == 1)
        #expect(WebhookDispatcher.delay(attempt: 4, base: 1, random: 0.5) == 4)
        #expect(WebhookDispatcher.delay(attempt: 30, base: 1, random: 1) == 600)
        func result(_ status: Int, curl: Int32 = 0, tls: Int32 = 0) -> pc_http_result {
            var r = pc_http_result()
            r.status = status
            r.curl_code = curl
            r.tls_failure = tls
            return r
        }
        #expect(WebhookDispatcher.classify(result(204)) == .delivered)
        #expect(WebhookDispatcher.classify(result(503)) == .retry("HTTP 503"))
        #expect(WebhookDispatcher.classify(result(429)) == .retry("HTTP 429"))
        #expect(WebhookDispatcher.classify(result(400)) == .failed("HTTP 400"))
        #expect(WebhookDispatcher.classify(result(302)) == .failed("HTTP 302"))
        if case .failed(let why) = WebhookDispatcher.classify(result(0, curl: 60, tls: 1)) {
            #expect(why.hasPrefix("TLS"))
        } else {
            Issue.record("TLS not a failure")
        }
        if case .retry = WebhookDispatcher.classify(result(0, curl: 7)) {} else { Issue.record("a refused connection is retried") }
    }
}
