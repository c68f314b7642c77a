import Engine
import FoundationEssentials
import Glibc
import HTTP
import Platform

/// `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
extension AdminAPI {
    func metrics() -> HTTPResponse {
        var m = PrometheusText()
        let jails = daemon.runningJails
        let manager = daemon.banManager!
        let bans = manager.statistics
        let now = Clock.now()
        let counters = jails.map { ($0, $0.counters) }

        m.family("portcullis_up", "gauge", "1 while the daemon runs.")
        m.sample("portcullis_up", [], 1)
        m.family("portcullis_build_info", "gauge", "The running version, as a label; always 1.")
        m.sample("portcullis_build_info", [("version", PortcullisVersion.string)], 1)
        // The standard process metrics of Prometheus' client libraries (dashboards compute uptime from the start).
        if let p = ProcessStats.current() {
            m.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.")
            m.sample("process_start_time_seconds", [], p.startTime.rounded())
            m.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")
            m.sample("process_cpu_seconds_total", [], p.cpuSeconds)
            m.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
            m.sample("process_resident_memory_bytes", [], p.residentBytes)
            m.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
            m.sample("process_virtual_memory_bytes", [], p.virtualBytes)
            m.family("process_open_fds", "gauge", "Number of open file descriptors.")
            m.sample("process_open_fds", [], Double(p.openFileDescriptors))
            m.family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
            m.sample("process_max_fds", [], Double(p.maxFileDescriptors))
        }
        m.family("portcullis_lines_read_total", "counter", "Log lines read, per jail.")
        for (j, c) in counters { m.sample("portcullis_lines_read_total", [("jail", j.name)], Double(c.linesRead)) }
        m.family("portcullis_failures_total", "counter", "Failures matched by the jail's filter.")
        for (j, c) in counters { m.sample("portcullis_failures_total", [("jail", j.name)], Double(c.totalFailed)) }
        m.family(
            "portcullis_gateway_failures_ignored_total", "counter",
            "Failures not counted because they came from a default gateway (ignoregateway): clients behind a proxy whose real addresses are lost.")
        for (j, c) in counters { m.sample("portcullis_gateway_failures_ignored_total", [("jail", j.name)], Double(c.gatewayIgnored)) }
        m.family("portcullis_default_gateway_info", "gauge", "The default gateways of the daemon's network namespace, one sample each.")
        for g in Gateways.shared.current(now: now).sorted() { m.sample("portcullis_default_gateway_info", [("address", g.description)], 1) }
        m.family("portcullis_currently_failed", "gauge", "Addresses with failures counted but not banned.")
        for (j, c) in counters { m.sample("portcullis_currently_failed", [("jail", j.name)], Double(c.currentlyFailed)) }
        m.family("portcullis_bans_active", "gauge", "Bans in force.")
        for j in jails { m.sample("portcullis_bans_active", [("jail", j.name)], Double(manager.activeCount(jail: j.name))) }
        m.family("portcullis_allowlist_entries", "gauge", "Runtime allowlist entries in force (POST /allowlist, addignoreip).")
        m.sample("portcullis_allowlist_entries", [], Double(manager.allowlist?.list(now: now).count ?? 0))
        m.family("portcullis_bans_total", "counter", "Bans made since the daemon started.")
        for j in jails { m.sample("portcullis_bans_total", [("jail", j.name)], Double(bans.bansTotal[j.name, default: 0])) }
        m.family("portcullis_unbans_total", "counter", "Bans lifted (expired or by request) since the daemon started.")
        for j in jails { m.sample("portcullis_unbans_total", [("jail", j.name)], Double(bans.unbansTotal[j.name, default: 0])) }
        m.family(
            "portcullis_ban_latency_seconds", "histogram", "From reading the log line that reached maxretry to the ban in force (stored, in the packet filter)."
        )
        for (bound, n) in bans.latency.cumulative {
            let le = bound.isInfinite ? "+Inf" : (bound == bound.rounded() ? String(Int(bound)) : String(bound))
            m.sample("portcullis_ban_latency_seconds_bucket", [("le", le)], Double(n))
        }
        m.sample("portcullis_ban_latency_seconds_sum", [], bans.latency.sum)
        m.sample("portcullis_ban_latency_seconds_count", [], Double(bans.latency.count))
        kernelAndStore(&m, now: now)
        m.family("portcullis_ban_failures_total", "counter", "Ban decisions the packet filter refused.")
        m.sample("portcullis_ban_failures_total", [], Double(bans.failedBans))
        m.family(
            "portcullis_ban_history_unread_total", "counter", "Bans given the base ban time because the ban history (bantime.increment) could not be read.")
        m.sample("portcullis_ban_history_unread_total", [], Double(bans.historyUnread))
        let trouble = manager.storeTrouble
        m.family("portcullis_store_ok", "gauge", "1 while every ban is written to the database, 0 while writes fail.")
        m.sample("portcullis_store_ok", [], trouble == nil ? 1 : 0)
        m.family("portcullis_store_unwritten", "gauge", "Ban changes in force but not yet written to the database.")
        m.sample("portcullis_store_unwritten", [], Double(trouble?.waiting ?? 0))
        // Watcher lag: log bytes written but not yet read, and the age of the last line read.
        m.family("portcullis_watcher_lag_bytes", "gauge", "Bytes of the jail's log files not read yet.")
        for j in jails {
            var behind = 0
            for p in j.positions {
                var st = stat()
                if stat(p.path, &st) == 0 { behind += max(0, Int(st.st_size) - p.offset) }
            }
            m.sample("portcullis_watcher_lag_bytes", [("jail", j.name)], Double(behind))
        }
        m.family("portcullis_last_line_timestamp_seconds", "gauge", "When the jail last read a log line (Unix time; 0: never).")
        for (j, c) in counters { m.sample("portcullis_last_line_timestamp_seconds", [("jail", j.name)], (c.lastLineAt ?? 0).rounded()) }

        let http = counters_()
        m.family("portcullis_http_requests_total", "counter", "API requests answered, by status code.")
        for (code, n) in http.requestsByStatus.sorted(by: { $0.key < $1.key }) {
            m.sample("portcullis_http_requests_total", [("code", String(code))], Double(n))
        }
        m.family("portcullis_http_connections", "gauge", "Open API connections.")
        m.sample("portcullis_http_connections", [], Double(http.openConnections))
        m.family("portcullis_http_connections_refused_total", "counter", "Connections refused (over max_connections, or out of descriptors).")
        m.sample("portcullis_http_connections_refused_total", [], Double(http.refusedConnections))
        let hooks = daemon.webhooks
        if !hooks.isEmpty {
            m.family(
                "portcullis_webhook_deliveries_total", "counter",
                "Webhook deliveries by outcome: delivered (2xx), retried (an attempt that failed and is made again), failed (4xx, TLS, or out of attempts), dropped (queue full)."
            )
            for h in hooks {
                let s = h.statistics
                for (outcome, n) in [("delivered", s.delivered), ("retried", s.retried), ("failed", s.failed), ("dropped", s.dropped)] {
                    m.sample("portcullis_webhook_deliveries_total", [("webhook", h.name), ("host", h.spec.host), ("outcome", outcome)], Double(n))
                }
            }
            m.family("portcullis_webhook_queue", "gauge", "Webhook deliveries waiting (in the store, in order).")
            for h in hooks { m.sample("portcullis_webhook_queue", [("webhook", h.name), ("host", h.spec.host)], Double(h.statistics.queued)) }
        }
        if let cluster = daemon.cluster { clusterMetrics(&m, cluster) }
        m.family("portcullis_event_subscribers", "gauge", "Clients following GET /events now.")
        m.sample("portcullis_event_subscribers", [], Double(daemon.events.clientCount))
        m.family("portcullis_events_sent_total", "counter", "Events handed to GET /events subscribers (one per event and subscriber).")
        m.sample("portcullis_events_sent_total", [], Double(daemon.events.eventsHandedOut))
        m.family(
            "portcullis_event_subscribers_dropped_total", "counter",
            "GET /events subscribers ended by the server because they read too slowly (events_buffer).")
        m.sample("portcullis_event_subscribers_dropped_total", [], Double(http.droppedStreams))
        return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body: Array(m.text.utf8))
    }

    /// The fleet's link: up or not, what waits, what went and came, and when each peer last announced itself.
    private func clusterMetrics(_ m: inout PrometheusText, _ cluster: ClusterLink) {
        let s = cluster.status
        let node = [("node", cluster.node)]
        m.family("portcullis_cluster_connected", "gauge", "1 when this node is connected to the fleet's PostgreSQL.")
        m.sample("portcullis_cluster_connected", node, s.connected ? 1 : 0)
        m.family("portcullis_cluster_last_id", "gauge", "The last id of the shared table applied here.")
        m.sample("portcullis_cluster_last_id", node, Double(s.lastID ?? 0))
        m.family("portcullis_cluster_queue", "gauge", "Bans and unbans of this node waiting to be sent (kept in the store).")
        m.sample("portcullis_cluster_queue", node, Double(s.queued))
        m.family("portcullis_cluster_sent_total", "counter", "Bans and unbans of this node written to the shared table.")
        m.sample("portcullis_cluster_sent_total", node, Double(s.sent))
        m.family(
            "portcullis_cluster_received_total", "counter",
            "Bans and unbans of other nodes read, by outcome: applied here, or skipped (jail not applied or not running, address ignored or allowlisted, ban over)."
        )
        m.sample("portcullis_cluster_received_total", node + [("outcome", "applied")], Double(s.applied))
        m.sample("portcullis_cluster_received_total", node + [("outcome", "skipped")], Double(s.skipped))
        m.family("portcullis_cluster_dropped_total", "counter", "Changes dropped because the queue was full.")
        m.sample("portcullis_cluster_dropped_total", node, Double(s.dropped))
        m.family("portcullis_cluster_peer_last_seen_seconds", "gauge", "When each other node last announced itself (Unix time).")
        for p in s.peers { m.sample("portcullis_cluster_peer_last_seen_seconds", node + [("peer", p.node)], p.lastSeen.rounded()) }
    }

    private func counters_() -> HTTPStats { counters.state.withLock { $0 } }

    /// The kernel's side (packets blocked, elements per set) beside the database's bans in force: they must agree.
    /// The set sizes and the database's counts are read together, at most once a minute by default (a dump of a
    /// large set is the kernel's costliest read: 0.7 s for 100,000 bans); the counters at every scrape.
    private func kernelAndStore(_ m: inout PrometheusText, now: Double) {
        let jails = daemon.nftablesJails
        guard !jails.isEmpty else { return }
        let blocked: [String: (packets: UInt64, bytes: UInt64)]?
        do { blocked = try NftablesFirewall.readBlocked() } catch {
            blocked = nil
            log.warning("metrics: reading the nftables rules failed: \(error)")
        }
        let sizes = setSizes(now: now)
        m.family("portcullis_kernel_read_ok", "gauge", "1 when the nftables table could be read back for these metrics.")
        m.sample("portcullis_kernel_read_ok", [], blocked == nil || (sizes != nil && sizes!.kernel == nil) ? 0 : 1)
        if let blocked {
            m.family("portcullis_blocked_packets_total", "counter", "Packets the jail's rules refused (their nftables counters; they restart at a reload).")
            for j in jails { m.sample("portcullis_blocked_packets_total", [("jail", j)], Double(blocked[j]?.packets ?? 0)) }
            m.family("portcullis_blocked_bytes_total", "counter", "Bytes of the packets the jail's rules refused.")
            for j in jails { m.sample("portcullis_blocked_bytes_total", [("jail", j)], Double(blocked[j]?.bytes ?? 0)) }
        }
        guard let sizes else { return }
        if let kernel = sizes.kernel {
            m.family(
                "portcullis_kernel_set_elements", "gauge", "Elements of each of the jail's nftables sets (addresses, or networks), read at most once a minute.")
            for j in jails {
                for (set, n) in (kernel[j] ?? [:]).sorted(by: { $0.key < $1.key }) {
                    m.sample("portcullis_kernel_set_elements", [("jail", j), ("set", set)], Double(n))
                }
            }
        }
        if let stored = sizes.stored {
            m.family("portcullis_store_bans", "gauge", "Bans in force in the database, read with the kernel's set sizes.")
            for j in jails { m.sample("portcullis_store_bans", [("jail", j)], Double(stored[j] ?? 0)) }
        }
        if let kernel = sizes.kernel, let stored = sizes.stored {
            m.family(
                "portcullis_kernel_store_difference", "gauge",
                "Elements in the jail's kernel sets minus its bans in force in the database, read together: 0 when they agree (a ban or an expiry between the two reads may show for a minute)."
            )
            for j in jails {
                let k = (kernel[j] ?? [:]).values.reduce(0, +)
                m.sample("portcullis_kernel_store_difference", [("jail", j)], Double(k - (stored[j] ?? 0)))
            }
        }
    }

    /// The kernel's set sizes and the database's bans in force, read together and kept for `setSizesMaxAge`
    /// seconds (a change of the jails reads them again at once).
    private func setSizes(now: Double) -> (kernel: [String: [String: Int]]?, stored: [String: Int]?)? {
        let jails = daemon.nftablesJails
        if let cached = kernelSizes.withLock({ $0 }), cached.jails == jails, now - cached.at < setSizesMaxAge, now >= cached.at {
            return (cached.kernel, cached.stored)
        }
        let kernel: [String: [String: Int]]?
        do { kernel = try NftablesFirewall.readSetSizes() } catch {
            kernel = nil
            log.warning("metrics: reading the nftables sets failed: \(error)")
        }
        let stored: [String: Int]?
        do { stored = try daemon.store?.activeCounts(now: now) } catch { stored = nil }
        kernelSizes.withLock { $0 = (now, jails, kernel, stored) }
        return (kernel, stored)
    }
}

/// Writes metric families: HELP and TYPE once, then samples with escaped label values.
struct PrometheusText {
    private(set) var text = ""

    mutating func family(_ name: String, _ type: String, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.map { "\($0.0)=\"\(PrometheusText.escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        text += " "
        text += value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        text += "\n"
    }

    static func escape(_ s: String) -> String {
        s.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"").replacing("\n", with: "\\n")
    }
}
