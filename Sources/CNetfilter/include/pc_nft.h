#ifndef PORTCULLIS_NFT_H
#define PORTCULLIS_NFT_H

// Portcullis' nftables transactions over libnftnl + libmnl: one netlink batch per transaction, every message
// acknowledged, errors reported with the sequence number of the message that caused them (so the caller can say
// which operation failed). Only the inet-family table Portcullis owns is ever touched.

#include <stddef.h>
#include <stdint.h>

typedef struct pc_nft_socket pc_nft_socket;
typedef struct pc_nft_batch pc_nft_batch;

/// Opens and binds a NETLINK_NETFILTER socket. On failure returns NULL and sets *error to the errno.
pc_nft_socket *pc_nft_open(int *error);
void pc_nft_close(pc_nft_socket *socket);

/// Starts a transaction. NULL when memory runs out.
pc_nft_batch *pc_nft_batch_new(pc_nft_socket *socket);
void pc_nft_batch_free(pc_nft_batch *batch);

/// Each add returns the sequence number of its message (0 when memory runs out).
uint32_t pc_nft_add_table(pc_nft_batch *batch, const char *table);
uint32_t pc_nft_del_table(pc_nft_batch *batch, const char *table);
/// A set of ipv4_addr (`ipv6` = 0) or ipv6_addr with timeouts: a hash of addresses, or (`interval`) an interval
/// set of networks (`flags interval, timeout`). `set_id` names it for lookups in the same batch.
uint32_t pc_nft_add_set(pc_nft_batch *batch, const char *table, const char *set, int ipv6, int interval, uint32_t set_id);
/// A base chain: type filter, the given hook (NF_INET_PRE_ROUTING, NF_INET_LOCAL_IN, NF_INET_FORWARD) and
/// priority, policy accept.
uint32_t pc_nft_add_chain(pc_nft_batch *batch, const char *table, const char *chain, uint32_t hook, int32_t priority);

/// What a rule matches and does.
typedef struct {
    int ipv6;                 // match IPv6 (saddr in an ipv6 set) or IPv4
    uint8_t l4proto;          // 6 tcp, 17 udp, 132 sctp; 0 any protocol
    uint16_t port_first;      // destination port range (host order); ignored when l4proto is 0 or all_ports
    uint16_t port_last;
    int all_ports;
    uint32_t port_set_id;     // non-zero: the ports are the anonymous set of this id (see pc_nft_add_port_set),
                              // and port_first/port_last are ignored
    int original_dport;       // match the destination port of the connection's original direction (`ct original
                              // proto-dst`: before DNAT, in the forward hook) instead of the packet's (`th dport`)
    const char *set;          // source address set
    uint32_t set_id;          // its id when created in the same batch (0 otherwise)
    int drop;                 // drop instead of reject (TCP reset for tcp, ICMP port unreachable otherwise)
    const char *comment;      // stored as rule user data (shown by `nft list`), may be NULL
} pc_nft_rule;

uint32_t pc_nft_add_rule(pc_nft_batch *batch, const char *table, const char *chain, const pc_nft_rule *rule);

/// An anonymous, constant interval set of destination ports (`tcp dport { 110, 995, 1000-2000 }`), bound to
/// the one rule that looks it up by `set_id`; the kernel names it. Returns the sequence number of its message.
uint32_t pc_nft_add_port_set(pc_nft_batch *batch, const char *table, uint32_t set_id);
/// Its elements: `count` ranges, sorted, not overlapping nor touching (host order). Sent in the same batch.
uint32_t pc_nft_add_port_ranges(pc_nft_batch *batch, const char *table, uint32_t set_id,
                                const uint16_t *firsts, const uint16_t *lasts, size_t count);

/// Addresses per element message at most (an IPv6 address with its timeout takes ~40 bytes of the message's element
/// list, one netlink attribute of at most 64 KiB). Larger calls are refused (return 0).
#define PC_NFT_MAX_ELEMENTS 1000

/// Adds `count` addresses (4 or 16 bytes each, back to back) to an address set; `timeouts_ms[i]` = 0 means no
/// timeout.
uint32_t pc_nft_add_elements(pc_nft_batch *batch, const char *table, const char *set, int ipv6,
                             const uint8_t *addresses, const uint64_t *timeouts_ms, size_t count);
uint32_t pc_nft_del_elements(pc_nft_batch *batch, const char *table, const char *set, int ipv6,
                             const uint8_t *addresses, size_t count);

/// Intervals per element message at most: a message's element list is one netlink attribute, whose length is
/// 16 bits (64 KiB); an IPv6 interval with its timeout takes ~100 bytes. Larger calls are refused (return 0).
#define PC_NFT_MAX_INTERVALS 400

/// Adds `count` networks to an interval set: `starts` and `ends` hold 4 or 16 bytes each, back to back (the first
/// address of each, and the first address after it); `open[i]` non-zero: the network runs to the last address (its
/// end is not read). `timeouts_ms[i]` = 0 means no timeout. The kernel refuses (EEXIST) a network that overlaps one
/// the set holds.
uint32_t pc_nft_add_intervals(pc_nft_batch *batch, const char *table, const char *set, int ipv6, const uint8_t *starts,
                              const uint8_t *ends, const uint8_t *open, const uint64_t *timeouts_ms, size_t count);
/// Removes networks given the same way (ENOENT for one the set does not hold).
uint32_t pc_nft_del_intervals(pc_nft_batch *batch, const char *table, const char *set, int ipv6, const uint8_t *starts,
                              const uint8_t *ends, const uint8_t *open, size_t count);

/// A message the kernel refused.
typedef struct {
    uint32_t seq;
    int error;                // errno
} pc_nft_failure;

/// Sends the transaction and collects the kernel's answers. Returns 0 when every message was accepted,
/// the number of failures written to `failures` (at most `capacity`) when some were refused (the kernel then
/// applied nothing), or -errno when the socket itself failed.
int pc_nft_commit(pc_nft_batch *batch, pc_nft_failure *failures, size_t capacity);

/// A rule of the table as the kernel holds it: its comment (user data written by pc_nft_add_rule) and the totals
/// of its counters.
typedef struct {
    char comment[128];
    uint64_t packets;
    uint64_t bytes;
} pc_nft_rule_counter;

/// Reads the rules of inet `table` on a netlink socket of its own (a reader never waits for a transaction, nor
/// a transaction for it). Fills at most `capacity`; returns how many rules there are, or -errno (ENOENT: no
/// such table).
int pc_nft_rule_counters(const char *table, pc_nft_rule_counter *out, size_t capacity);

/// A named set of the table and how many elements it holds: addresses, or networks (an interval set's start
/// elements).
typedef struct {
    char name[64];
    uint64_t elements;
} pc_nft_set_size;

/// Reads the named sets of inet `table` and counts their elements (one dump per set), on sockets of their own.
/// Fills at most `capacity`; returns how many sets there are, or -errno.
int pc_nft_set_sizes(const char *table, pc_nft_set_size *out, size_t capacity);

#endif
