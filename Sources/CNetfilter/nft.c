// See pc_nft.h. The message layouts follow what nft(8) sends for the equivalent commands.

#include "pc_nft.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/table.h>
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/expr.h>
#include <libnftnl/set.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>

// nft's datatype ids for set keys.
#define PC_TYPE_IPADDR 7
#define PC_TYPE_IP6ADDR 8
#define PC_TYPE_INET_SERVICE 13
// What nft names an anonymous set; the kernel replaces %d with a free number.
#define PC_ANONYMOUS_SET "__set%d"

struct pc_nft_socket {
    struct mnl_socket *nl;
    uint32_t portid;
    uint32_t seq;
};

struct pc_nft_batch {
    pc_nft_socket *socket;
    char *buf;
    size_t len;
    size_t cap;
    size_t acks;       // messages that asked for an acknowledgement
    int oom;
};

pc_nft_socket *pc_nft_open(int *error) {
    pc_nft_socket *s = calloc(1, sizeof *s);
    if (!s) { *error = ENOMEM; return NULL; }
    s->nl = mnl_socket_open(NETLINK_NETFILTER);
    if (!s->nl) { *error = errno; free(s); return NULL; }
    if (mnl_socket_bind(s->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        *error = errno;
        mnl_socket_close(s->nl);
        free(s);
        return NULL;
    }
    s->portid = mnl_socket_get_portid(s->nl);
    s->seq = (uint32_t)time(NULL);
    // Large transactions (100,000 bans at start-up) need room for the batch and its acknowledgements.
    int size = 16 * 1024 * 1024;
    setsockopt(mnl_socket_get_fd(s->nl), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size);
    setsockopt(mnl_socket_get_fd(s->nl), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    // A transaction the kernel never answers (a malformed message it dropped) must fail, not hang the ban worker.
    struct timeval timeout = {.tv_sec = 10, .tv_usec = 0};
    setsockopt(mnl_socket_get_fd(s->nl), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    return s;
}

void pc_nft_close(pc_nft_socket *s) {
    if (!s) return;
    mnl_socket_close(s->nl);
    free(s);
}

// Room for one more message of up to `need` bytes.
static char *reserve(pc_nft_batch *b, size_t need) {
    if (b->oom) return NULL;
    if (b->len + need > b->cap) {
        size_t cap = b->cap * 2;
        while (b->len + need > cap) cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) { b->oom = 1; return NULL; }
        b->buf = nb;
        b->cap = cap;
    }
    return b->buf + b->len;
}

static void commit_message(pc_nft_batch *b, struct nlmsghdr *nlh) {
    b->len += NLMSG_ALIGN(nlh->nlmsg_len);
}

pc_nft_batch *pc_nft_batch_new(pc_nft_socket *s) {
    pc_nft_batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->socket = s;
    b->cap = 64 * 1024;
    b->buf = malloc(b->cap);
    if (!b->buf) { free(b); return NULL; }
    struct nlmsghdr *nlh = nftnl_batch_begin(b->buf, s->seq++);
    commit_message(b, nlh);
    return b;
}

void pc_nft_batch_free(pc_nft_batch *b) {
    if (!b) return;
    free(b->buf);
    free(b);
}

static struct nlmsghdr *header(pc_nft_batch *b, size_t room, uint16_t type, uint16_t flags, uint32_t *seq) {
    char *at = reserve(b, room);
    if (!at) return NULL;
    *seq = b->socket->seq++;
    b->acks++;
    return nftnl_nlmsg_build_hdr(at, type, NFPROTO_INET, flags | NLM_F_ACK, *seq);
}

/// NEWTABLE and DELTABLE carry the same payload: the table's name and family.
static uint32_t table_message(pc_nft_batch *b, const char *name, uint16_t type, uint16_t flags) {
    struct nftnl_table *t = nftnl_table_alloc();
    if (!t) return 0;
    nftnl_table_set_str(t, NFTNL_TABLE_NAME, name);
    nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, NFPROTO_INET);
    uint32_t seq = 0;
    struct nlmsghdr *nlh = header(b, 1024, type, flags, &seq);
    if (nlh) { nftnl_table_nlmsg_build_payload(nlh, t); commit_message(b, nlh); }
    nftnl_table_free(t);
    return nlh ? seq : 0;
}

uint32_t pc_nft_add_table(pc_nft_batch *b, const char *name) {
    return table_message(b, name, NFT_MSG_NEWTABLE, NLM_F_CREATE);
}

uint32_t pc_nft_del_table(pc_nft_batch *b, const char *name) {
    return table_message(b, name, NFT_MSG_DELTABLE, 0);
}

/// A set of the table, named (or, for an anonymous one, identified by `set_id`): what every set message starts with.
static struct nftnl_set *set_of(const char *table, const char *name, uint32_t set_id) {
    struct nftnl_set *s = nftnl_set_alloc();
    if (!s) return NULL;
    nftnl_set_set_str(s, NFTNL_SET_TABLE, table);
    nftnl_set_set_str(s, NFTNL_SET_NAME, name);
    nftnl_set_set_u32(s, NFTNL_SET_FAMILY, NFPROTO_INET);
    if (set_id) nftnl_set_set_u32(s, NFTNL_SET_ID, set_id);
    return s;
}

/// Sends NEWSET for `s` (which it frees).
static uint32_t new_set(pc_nft_batch *b, struct nftnl_set *s, uint32_t key_type, uint32_t key_len, uint32_t flags) {
    nftnl_set_set_u32(s, NFTNL_SET_KEY_TYPE, key_type);
    nftnl_set_set_u32(s, NFTNL_SET_KEY_LEN, key_len);
    nftnl_set_set_u32(s, NFTNL_SET_FLAGS, flags);
    uint32_t seq = 0;
    struct nlmsghdr *nlh = header(b, 2048, NFT_MSG_NEWSET, NLM_F_CREATE, &seq);
    if (nlh) { nftnl_set_nlmsg_build_payload(nlh, s); commit_message(b, nlh); }
    nftnl_set_free(s);
    return nlh ? seq : 0;
}

/// Sends a set-element message for the elements added to `s` (which it frees).
static uint32_t element_message(pc_nft_batch *b, struct nftnl_set *s, uint16_t type, uint16_t flags, size_t room) {
    uint32_t seq = 0;
    struct nlmsghdr *nlh = header(b, room, type, flags, &seq);
    if (nlh) { nftnl_set_elems_nlmsg_build_payload(nlh, s); commit_message(b, nlh); }
    nftnl_set_free(s);
    return nlh ? seq : 0;
}

uint32_t pc_nft_add_set(pc_nft_batch *b, const char *table, const char *name, int ipv6, int interval, uint32_t set_id) {
    struct nftnl_set *s = set_of(table, name, set_id);
    if (!s) return 0;
    return new_set(b, s, ipv6 ? PC_TYPE_IP6ADDR : PC_TYPE_IPADDR, ipv6 ? 16 : 4, NFT_SET_TIMEOUT | (interval ? NFT_SET_INTERVAL : 0));
}

uint32_t pc_nft_add_chain(pc_nft_batch *b, const char *table, const char *name, uint32_t hook, int32_t priority) {
    struct nftnl_chain *c = nftnl_chain_alloc();
    if (!c) return 0;
    nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, table);
    nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
    nftnl_chain_set_u32(c, NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, hook);
    nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, priority);
    nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, "filter");
    nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);
    uint32_t seq = 0;
    struct nlmsghdr *nlh = header(b, 2048, NFT_MSG_NEWCHAIN, NLM_F_CREATE, &seq);
    if (nlh) { nftnl_chain_nlmsg_build_payload(nlh, c); commit_message(b, nlh); }
    nftnl_chain_free(c);
    return nlh ? seq : 0;
}

static void add_meta(struct nftnl_rule *r, uint32_t key) {
    struct nftnl_expr *e = nftnl_expr_alloc("meta");
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
    nftnl_rule_add_expr(r, e);
}

static void add_cmp(struct nftnl_rule *r, uint32_t op, const void *data, uint32_t len) {
    struct nftnl_expr *e = nftnl_expr_alloc("cmp");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
    nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
    nftnl_rule_add_expr(r, e);
}

static void add_payload(struct nftnl_rule *r, uint32_t base, uint32_t offset, uint32_t len) {
    struct nftnl_expr *e = nftnl_expr_alloc("payload");
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
    nftnl_rule_add_expr(r, e);
}

// The destination port into register 1, big-endian: the packet's (`th dport`), or the one the client sent to in
// the connection's original direction (`ct original proto-dst`), which DNAT does not rewrite. A packet without
// conntrack makes the ct expression break the rule: it then matches nothing, as nft's own rule would.
static void add_dport(struct nftnl_rule *r, int original) {
    if (!original) {
        add_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
        return;
    }
    struct nftnl_expr *e = nftnl_expr_alloc("ct");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_PROTO_DST);
    nftnl_expr_set_u8(e, NFTNL_EXPR_CT_DIR, 0);   // IP_CT_DIR_ORIGINAL
    nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
    nftnl_rule_add_expr(r, e);
}

uint32_t pc_nft_add_rule(pc_nft_batch *b, const char *table, const char *chain, const pc_nft_rule *spec) {
    struct nftnl_rule *r = nftnl_rule_alloc();
    if (!r) return 0;
    nftnl_rule_set_str(r, NFTNL_RULE_TABLE, table);
    nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
    nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_INET);

    // meta nfproto ipv4|ipv6
    uint8_t nfproto = spec->ipv6 ? NFPROTO_IPV6 : NFPROTO_IPV4;
    add_meta(r, NFT_META_NFPROTO);
    add_cmp(r, NFT_CMP_EQ, &nfproto, 1);
    if (spec->l4proto) {
        // meta l4proto tcp, then th dport (ranges as >= first, <= last; the kernel compares big-endian data)
        add_meta(r, NFT_META_L4PROTO);
        add_cmp(r, NFT_CMP_EQ, &spec->l4proto, 1);
        if (!spec->all_ports && spec->port_set_id) {
            // th dport @anonymous-set (or ct original proto-dst @anonymous-set)
            add_dport(r, spec->original_dport);
            struct nftnl_expr *ports = nftnl_expr_alloc("lookup");
            nftnl_expr_set_u32(ports, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
            nftnl_expr_set_str(ports, NFTNL_EXPR_LOOKUP_SET, PC_ANONYMOUS_SET);
            nftnl_expr_set_u32(ports, NFTNL_EXPR_LOOKUP_SET_ID, spec->port_set_id);
            nftnl_rule_add_expr(r, ports);
        } else if (!spec->all_ports) {
            uint16_t first = htons(spec->port_first), last = htons(spec->port_last);
            add_dport(r, spec->original_dport);
            if (spec->port_first == spec->port_last) {
                add_cmp(r, NFT_CMP_EQ, &first, 2);
            } else {
                add_cmp(r, NFT_CMP_GTE, &first, 2);
                add_cmp(r, NFT_CMP_LTE, &last, 2);
            }
        }
    }
    // ip saddr @set / ip6 saddr @set
    add_payload(r, NFT_PAYLOAD_NETWORK_HEADER, spec->ipv6 ? 8 : 12, spec->ipv6 ? 16 : 4);
    struct nftnl_expr *lookup = nftnl_expr_alloc("lookup");
    nftnl_expr_set_u32(lookup, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
    nftnl_expr_set_str(lookup, NFTNL_EXPR_LOOKUP_SET, spec->set);
    if (spec->set_id) nftnl_expr_set_u32(lookup, NFTNL_EXPR_LOOKUP_SET_ID, spec->set_id);
    nftnl_rule_add_expr(r, lookup);
    nftnl_rule_add_expr(r, nftnl_expr_alloc("counter"));
    if (spec->drop) {
        struct nftnl_expr *v = nftnl_expr_alloc("immediate");
        nftnl_expr_set_u32(v, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(v, NFTNL_EXPR_IMM_VERDICT, NF_DROP);
        nftnl_rule_add_expr(r, v);
    } else {
        struct nftnl_expr *v = nftnl_expr_alloc("reject");
        if (spec->l4proto == IPPROTO_TCP) {
            nftnl_expr_set_u32(v, NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_TCP_RST);
            nftnl_expr_set_u8(v, NFTNL_EXPR_REJECT_CODE, 0);
        } else {
            nftnl_expr_set_u32(v, NFTNL_EXPR_REJECT_TYPE, NFT_REJECT_ICMPX_UNREACH);
            nftnl_expr_set_u8(v, NFTNL_EXPR_REJECT_CODE, NFT_REJECT_ICMPX_PORT_UNREACH);
        }
        nftnl_rule_add_expr(r, v);
    }
    if (spec->comment) {
        // nft shows user data of this form as "comment": type 0, then length, then the text with its NUL.
        size_t n = strlen(spec->comment);
        if (n > 127) n = 127;
        uint8_t udata[130];
        udata[0] = 0;
        udata[1] = (uint8_t)(n + 1);
        memcpy(udata + 2, spec->comment, n);
        udata[2 + n] = 0;
        nftnl_rule_set_data(r, NFTNL_RULE_USERDATA, udata, (uint32_t)(n + 3));
    }
    uint32_t seq = 0;
    struct nlmsghdr *nlh = header(b, 4096, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &seq);
    if (nlh) { nftnl_rule_nlmsg_build_payload(nlh, r); commit_message(b, nlh); }
    nftnl_rule_free(r);
    return nlh ? seq : 0;
}

uint32_t pc_nft_add_port_set(pc_nft_batch *b, const char *table, uint32_t set_id) {
    struct nftnl_set *s = set_of(table, PC_ANONYMOUS_SET, set_id);
    if (!s) return 0;
    return new_set(b, s, PC_TYPE_INET_SERVICE, 2, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL);
}

static int add_port_element(struct nftnl_set *s, uint16_t port, int end) {
    struct nftnl_set_elem *e = nftnl_set_elem_alloc();
    if (!e) return 0;
    uint16_t key = htons(port);
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, &key, 2);
    if (end) nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
    nftnl_set_elem_add(s, e);
    return 1;
}

uint32_t pc_nft_add_port_ranges(pc_nft_batch *b, const char *table, uint32_t set_id,
                                const uint16_t *firsts, const uint16_t *lasts, size_t count) {
    struct nftnl_set *s = set_of(table, PC_ANONYMOUS_SET, set_id);
    if (!s) return 0;
    int ok = 1;
    // As nft encodes intervals: an end marker at 0 when the first range starts above it, then each range as its
    // start and, unless it runs to 65535, an end marker just past it.
    if (count > 0 && firsts[0] > 0) ok &= add_port_element(s, 0, 1);
    for (size_t i = 0; i < count && ok; i++) {
        ok &= add_port_element(s, firsts[i], 0);
        if (lasts[i] < 65535) ok &= add_port_element(s, (uint16_t)(lasts[i] + 1), 1);
    }
    if (!ok) { nftnl_set_free(s); b->oom = 1; return 0; }
    return element_message(b, s, NFT_MSG_NEWSETELEM, NLM_F_CREATE, 1024 + (count + 1) * 2 * 64);
}

static uint32_t elements(pc_nft_batch *b, uint16_t type, uint16_t flags, const char *table, const char *name,
                         int ipv6, const uint8_t *addresses, const uint64_t *timeouts, size_t count) {
    if (count > PC_NFT_MAX_ELEMENTS) return 0;
    struct nftnl_set *s = set_of(table, name, 0);
    if (!s) return 0;
    size_t klen = ipv6 ? 16 : 4;
    for (size_t i = 0; i < count; i++) {
        struct nftnl_set_elem *e = nftnl_set_elem_alloc();
        if (!e) { nftnl_set_free(s); b->oom = 1; return 0; }
        nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, addresses + i * klen, (uint32_t)klen);
        if (timeouts && timeouts[i]) nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, timeouts[i]);
        nftnl_set_elem_add(s, e);
    }
    // Per element: key attribute, timeout, nesting — well under 64 bytes.
    return element_message(b, s, type, flags, 1024 + count * 64);
}

uint32_t pc_nft_add_elements(pc_nft_batch *b, const char *table, const char *set, int ipv6,
                             const uint8_t *addresses, const uint64_t *timeouts_ms, size_t count) {
    return elements(b, NFT_MSG_NEWSETELEM, NLM_F_CREATE, table, set, ipv6, addresses, timeouts_ms, count);
}

uint32_t pc_nft_del_elements(pc_nft_batch *b, const char *table, const char *set, int ipv6,
                             const uint8_t *addresses, size_t count) {
    return elements(b, NFT_MSG_DELSETELEM, 0, table, set, ipv6, addresses, NULL, count);
}

// What nft writes into an element's user data for an interval open at the top (`255.255.255.0/24`): its
// NFTNL_UDATA_SET_ELEM_FLAGS attribute (type 1, length 4) holding NFTNL_SET_ELEM_F_INTERVAL_OPEN, so that
// `nft list` prints the network. The kernel does not read it.
static const uint8_t open_interval_udata[] = {1, 4, 1, 0, 0, 0};

static int add_interval_element(struct nftnl_set *s, const uint8_t *key, size_t klen, uint32_t flags, uint64_t timeout,
                                int open) {
    struct nftnl_set_elem *e = nftnl_set_elem_alloc();
    if (!e) return 0;
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, (uint32_t)klen);
    if (flags) nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, flags);
    if (timeout) nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, timeout);
    if (open) nftnl_set_elem_set(e, NFTNL_SET_ELEM_USERDATA, open_interval_udata, sizeof open_interval_udata);
    nftnl_set_elem_add(s, e);
    return 1;
}

// An interval is two elements, as the kernel's interval sets take it: its first address, and the first address
// after it flagged as an end; an interval that runs to the last address has no end element. The start carries the
// timeout (the kernel refuses one on an end element, EINVAL, and expires the pair with its start).
static uint32_t intervals(pc_nft_batch *b, uint16_t type, uint16_t flags, const char *table, const char *name,
                          int ipv6, const uint8_t *starts, const uint8_t *ends, const uint8_t *open,
                          const uint64_t *timeouts, size_t count) {
    if (count > PC_NFT_MAX_INTERVALS) return 0;
    struct nftnl_set *s = set_of(table, name, 0);
    if (!s) return 0;
    size_t klen = ipv6 ? 16 : 4;
    int ok = 1;
    for (size_t i = 0; i < count && ok; i++) {
        uint64_t timeout = timeouts ? timeouts[i] : 0;
        ok &= add_interval_element(s, starts + i * klen, klen, 0, timeout, open[i]);
        if (ok && !open[i]) ok &= add_interval_element(s, ends + i * klen, klen, NFT_SET_ELEM_INTERVAL_END, 0, 0);
    }
    if (!ok) { nftnl_set_free(s); b->oom = 1; return 0; }
    // Per element: key attribute, flags, timeout, nesting — well under 64 bytes; two elements per interval.
    return element_message(b, s, type, flags, 1024 + count * 2 * 64);
}

uint32_t pc_nft_add_intervals(pc_nft_batch *b, const char *table, const char *set, int ipv6, const uint8_t *starts,
                              const uint8_t *ends, const uint8_t *open, const uint64_t *timeouts_ms, size_t count) {
    return intervals(b, NFT_MSG_NEWSETELEM, NLM_F_CREATE, table, set, ipv6, starts, ends, open, timeouts_ms, count);
}

uint32_t pc_nft_del_intervals(pc_nft_batch *b, const char *table, const char *set, int ipv6, const uint8_t *starts,
                              const uint8_t *ends, const uint8_t *open, size_t count) {
    return intervals(b, NFT_MSG_DELSETELEM, 0, table, set, ipv6, starts, ends, open, NULL, count);
}

int pc_nft_commit(pc_nft_batch *b, pc_nft_failure *failures, size_t capacity) {
    if (b->oom) return -ENOMEM;
    char *at = reserve(b, NLMSG_HDRLEN + 64);
    if (!at) return -ENOMEM;
    struct nlmsghdr *end = nftnl_batch_end(at, b->socket->seq++);
    commit_message(b, end);

    struct mnl_socket *nl = b->socket->nl;
    if (mnl_socket_sendto(nl, b->buf, b->len) < 0) return -errno;

    // The kernel handles the whole batch inside sendmsg: every answer is queued by now.
    size_t answers = 0, failed = 0;
    char reply[MNL_SOCKET_BUFFER_SIZE * 4];
    while (answers < b->acks) {
        ssize_t n = recv(mnl_socket_get_fd(nl), reply, sizeof reply, answers == 0 ? 0 : MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            // No answer at all within SO_RCVTIMEO: the kernel dropped the batch.
            if ((errno == EAGAIN || errno == EWOULDBLOCK) && answers == 0) return -ETIMEDOUT;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return -errno;
        }
        struct nlmsghdr *nlh = (struct nlmsghdr *)reply;
        int len = (int)n;
        for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
            if (nlh->nlmsg_type != NLMSG_ERROR) continue;
            const struct nlmsgerr *err = mnl_nlmsg_get_payload(nlh);
            answers++;
            if (err->error != 0) {
                if (failed < capacity) {
                    failures[failed].seq = nlh->nlmsg_seq;
                    failures[failed].error = -err->error;
                }
                failed++;
            }
        }
    }
    return (int)(failed < capacity ? failed : capacity);
}

// MARK: reading the table back (counters, set sizes), on sockets of their own

// One dump request on a fresh socket: `cb` sees every message of the answer. A socket of its own, so that a
// reader (a metrics scrape) never waits for the ban path's transactions, nor they for it.
static int dump(struct nlmsghdr *request, mnl_cb_t cb, void *data) {
    struct mnl_socket *nl = mnl_socket_open(NETLINK_NETFILTER);
    if (!nl) return -errno;
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) { int e = errno; mnl_socket_close(nl); return -e; }
    struct timeval timeout = {.tv_sec = 10, .tv_usec = 0};
    setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    uint32_t portid = mnl_socket_get_portid(nl);
    uint32_t seq = request->nlmsg_seq;
    int ret = 0;
    if (mnl_socket_sendto(nl, request, request->nlmsg_len) < 0) {
        ret = -errno;
    } else {
        size_t cap = MNL_SOCKET_BUFFER_SIZE * 4;
        char *buf = malloc(cap);
        if (!buf) ret = -ENOMEM;
        while (buf) {
            ssize_t n = mnl_socket_recvfrom(nl, buf, cap);
            if (n < 0) { ret = errno == EAGAIN ? -ETIMEDOUT : -errno; break; }
            int r = mnl_cb_run(buf, (size_t)n, seq, portid, cb, data);
            if (r < 0) { ret = -errno; break; }
            if (r == MNL_CB_STOP) break;
        }
        free(buf);
    }
    mnl_socket_close(nl);
    return ret;
}

struct rule_counters { pc_nft_rule_counter *out; size_t capacity; size_t count; };

static int counter_expr(struct nftnl_expr *e, void *data) {
    pc_nft_rule_counter *c = data;
    const char *name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
    if (name && strcmp(name, "counter") == 0) {
        c->packets += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
        c->bytes += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
    }
    return MNL_CB_OK;
}

static int rule_cb(const struct nlmsghdr *nlh, void *data) {
    struct rule_counters *rc = data;
    struct nftnl_rule *r = nftnl_rule_alloc();
    if (!r) return MNL_CB_ERROR;
    if (nftnl_rule_nlmsg_parse(nlh, r) == 0) {
        if (rc->count < rc->capacity) {
            pc_nft_rule_counter *c = &rc->out[rc->count];
            memset(c, 0, sizeof *c);
            uint32_t len = 0;
            const uint8_t *udata = nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &len);
            // The comment as pc_nft_add_rule wrote it: type 0, length, text with its NUL.
            if (udata && len >= 3 && udata[0] == 0 && (uint32_t)udata[1] + 2 <= len) {
                size_t n = udata[1] > 0 ? udata[1] - 1 : 0;
                if (n >= sizeof c->comment) n = sizeof c->comment - 1;
                memcpy(c->comment, udata + 2, n);
                c->comment[n] = 0;
            }
            nftnl_expr_foreach(r, counter_expr, c);
        }
        rc->count++;
    }
    nftnl_rule_free(r);
    return MNL_CB_OK;
}

int pc_nft_rule_counters(const char *table, pc_nft_rule_counter *out, size_t capacity) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, (uint32_t)time(NULL));
    struct nftnl_rule *r = nftnl_rule_alloc();
    if (!r) return -ENOMEM;
    nftnl_rule_set_str(r, NFTNL_RULE_TABLE, table);
    nftnl_rule_nlmsg_build_payload(nlh, r);
    nftnl_rule_free(r);
    struct rule_counters rc = {out, capacity, 0};
    int ret = dump(nlh, rule_cb, &rc);
    return ret < 0 ? ret : (int)rc.count;
}

struct set_names { pc_nft_set_size *out; size_t capacity; size_t count; };

static int set_cb(const struct nlmsghdr *nlh, void *data) {
    struct set_names *sn = data;
    struct nftnl_set *s = nftnl_set_alloc();
    if (!s) return MNL_CB_ERROR;
    if (nftnl_set_nlmsg_parse(nlh, s) == 0) {
        const char *name = nftnl_set_get_str(s, NFTNL_SET_NAME);
        // Anonymous sets (a rule's ports) are the kernel's "__set%d".
        if (name && strncmp(name, "__", 2) != 0 && strlen(name) < sizeof sn->out[0].name) {
            if (sn->count < sn->capacity) {
                strcpy(sn->out[sn->count].name, name);
                sn->out[sn->count].elements = 0;
            }
            sn->count++;
        }
    }
    nftnl_set_free(s);
    return MNL_CB_OK;
}

// Counted from the netlink attributes themselves: parsing every element into a libnftnl object cost about a second
// per scrape with 100,000 bans.
static int elems_cb(const struct nlmsghdr *nlh, void *data) {
    uint64_t *n = data;
    struct nlattr *attr;
    mnl_attr_for_each(attr, nlh, sizeof(struct nfgenmsg)) {
        if (mnl_attr_get_type(attr) != NFTA_SET_ELEM_LIST_ELEMENTS) continue;
        struct nlattr *elem;
        mnl_attr_for_each_nested(elem, attr) {
            uint32_t flags = 0;
            struct nlattr *a;
            mnl_attr_for_each_nested(a, elem) {
                if (mnl_attr_get_type(a) == NFTA_SET_ELEM_FLAGS && mnl_attr_get_payload_len(a) >= 4) flags = ntohl(mnl_attr_get_u32(a));
            }
            // A network is two elements, its start and the end after it (none for one that runs to the top): count
            // starts.
            if (!(flags & NFT_SET_ELEM_INTERVAL_END)) (*n)++;
        }
    }
    return MNL_CB_OK;
}

int pc_nft_set_sizes(const char *table, pc_nft_set_size *out, size_t capacity) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    uint32_t seq = (uint32_t)time(NULL);
    struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSET, NFPROTO_INET, NLM_F_DUMP, seq);
    struct nftnl_set *s = nftnl_set_alloc();
    if (!s) return -ENOMEM;
    nftnl_set_set_str(s, NFTNL_SET_TABLE, table);
    nftnl_set_nlmsg_build_payload(nlh, s);
    nftnl_set_free(s);
    struct set_names sn = {out, capacity, 0};
    int ret = dump(nlh, set_cb, &sn);
    if (ret < 0) return ret;
    size_t listed = sn.count < capacity ? sn.count : capacity;
    for (size_t i = 0; i < listed; i++) {
        nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, ++seq);
        struct nftnl_set *q = nftnl_set_alloc();
        if (!q) return -ENOMEM;
        nftnl_set_set_str(q, NFTNL_SET_TABLE, table);
        nftnl_set_set_str(q, NFTNL_SET_NAME, out[i].name);
        nftnl_set_elems_nlmsg_build_payload(nlh, q);
        nftnl_set_free(q);
        ret = dump(nlh, elems_cb, &out[i].elements);
        // A set deleted between the two dumps (a reload): counted as empty.
        if (ret < 0 && ret != -ENOENT) return ret;
    }
    return (int)sn.count;
}
