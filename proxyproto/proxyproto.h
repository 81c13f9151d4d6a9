/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * proxyproto.h: libproxyproto, a pure PROXY protocol v1/v2 parser and encoder
 * (the specification is HAProxy's doc/proxy-protocol.txt; where and how this parser
 * is stricter than HAProxy is listed at the top of proxyproto.c). No allocation, no
 * logging, no mutable globals: the parser reads a caller's buffer and returns
 * slices into it.
 */
#ifndef EXRELAY_PROXYPROTO_H
#define EXRELAY_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#define PP_NEED_MORE  (-2)   /* buf is a valid prefix of a header: read more */
#define PP_INVALID    (-1)   /* not a valid header: close the connection */

#define PP_CMD_LOCAL  0
#define PP_CMD_PROXY  1

#define PP_V1_MAX_LEN       107   /* longest v1 line, CRLF included */
#define PP_V2_HDR_LEN       16    /* fixed part of a v2 header */
#define PP_V2_MAX_LEN       (PP_V2_HDR_LEN + 65535)
#define PP_V2_ADDR_LEN_INET  12
#define PP_V2_ADDR_LEN_INET6 36
#define PP_V2_ADDR_LEN_UNIX  216
#define PP_V2_UNIX_PATH_LEN  108

/* v2 TLV types (proxy-protocol.txt 2.2). */
#define PP2_TYPE_ALPN           0x01
#define PP2_TYPE_AUTHORITY      0x02
#define PP2_TYPE_CRC32C         0x03
#define PP2_TYPE_NOOP           0x04
#define PP2_TYPE_UNIQUE_ID      0x05
#define PP2_TYPE_SSL            0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CN      0x22
#define PP2_SUBTYPE_SSL_CIPHER  0x23
#define PP2_SUBTYPE_SSL_SIG_ALG 0x24
#define PP2_SUBTYPE_SSL_KEY_ALG 0x25
#define PP2_TYPE_NETNS          0x30

/* Bits of the <client> byte of the SSL TLV. */
#define PP2_CLIENT_SSL          0x01
#define PP2_CLIENT_CERT_CONN    0x02
#define PP2_CLIENT_CERT_SESS    0x04

#define PP2_UNIQUE_ID_MAX       128   /* longest UNIQUE_ID value */
#define PP2_SSL_FIXED_LEN       5     /* client (1) + verify (4) before SSL sub-TLVs */
#define PP2_CRC32C_TLV_LEN      7     /* type, length, 4-byte checksum */

struct pp_header {
	int version;                       /* 1 or 2 */
	int command;                       /* PP_CMD_LOCAL or PP_CMD_PROXY (v1 is always PROXY) */
	int family;                        /* AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC (v1 UNKNOWN, v2 UNSPEC or LOCAL) */
	int socktype;                      /* SOCK_STREAM, SOCK_DGRAM, or 0 (unspecified / LOCAL) */
	struct sockaddr_storage src, dst;  /* filled for AF_INET/AF_INET6/AF_UNIX */
	const uint8_t *tlv;                /* v2 TLV block inside buf, or NULL */
	size_t tlv_len;
};

/*
 * Parses a PROXY header (v1 or v2) at the start of buf.
 * Returns the header length (> 0) when buf starts with a complete valid header;
 * bytes after it are not looked at. Returns PP_NEED_MORE when buf is a proper
 * prefix of a possibly valid header, PP_INVALID as soon as it cannot be one.
 * hdr (may be NULL) is written only on success; hdr->tlv points into buf.
 */
ssize_t pp_parse(const void *buf, size_t len, struct pp_header *hdr);

/* Like pp_parse; *why (if why is not NULL) gets a static text saying why the
 * header was refused (or "ok", or "incomplete header"). */
ssize_t pp_parse_ex(const void *buf, size_t len, struct pp_header *hdr, const char **why);

/* Finds the first TLV of the given type (SSL sub-TLVs: search inside the SSL value); 0 found, -1 not. */
int pp_tlv_find(const struct pp_header *hdr, uint8_t type, const uint8_t **value, size_t *len);

/* Returns 1 when the header has an SSL TLV whose client byte has PP2_CLIENT_SSL, else 0. */
int pp_client_used_tls(const struct pp_header *hdr);

/* Walks a TLV block: set it->p/it->left to the block, then call pp_tlv_next. */
struct pp_tlv_iter {
	const uint8_t *p;
	size_t left;
};
/* Returns 1 with the next TLV in type, value and len, 0 at the end, -1 if the block is malformed. */
int pp_tlv_next(struct pp_tlv_iter *it, uint8_t *type, const uint8_t **value, size_t *len);

/* Write a header into out; return its length, or -1 if cap is too small or the addresses are unusable.
 * v1: only AF_INET or AF_INET6 pairs of the same family (TCP4/TCP6); no NUL is written. */
ssize_t pp_encode_v1(void *out, size_t cap, const struct sockaddr *src, const struct sockaddr *dst);

/* v2: command PP_CMD_PROXY with an AF_INET, AF_INET6 or AF_UNIX pair (the family byte says STREAM),
 * or PP_CMD_LOCAL (family UNSPEC, src/dst ignored and may be NULL). tlv (tlv_len bytes, may be NULL
 * when 0) is copied after the address block and must be a well-formed TLV block. */
ssize_t pp_encode_v2(void *out, size_t cap, int command, const struct sockaddr *src,
                     const struct sockaddr *dst, const uint8_t *tlv, size_t tlv_len);

#define PP_ENC_CRC32C  0x01   /* append a CRC32C TLV and fill it */
/* pp_encode_v2 with flags (PP_ENC_CRC32C). */
ssize_t pp_encode_v2_ex(void *out, size_t cap, int command, const struct sockaddr *src,
                        const struct sockaddr *dst, const uint8_t *tlv, size_t tlv_len, int flags);

/* Names a pp_parse result: "ok" for lengths, texts for PP_NEED_MORE and PP_INVALID. */
const char *pp_strerror(ssize_t code);

/*
 * CRC32C (Castagnoli, RFC 4960 appendix B), in crc32c.c. crc is the value returned
 * by a previous call (0 to start), so pp_crc32c(pp_crc32c(0, a, n), b, m) is the
 * checksum of a then b. pp_crc32c uses the SSE4.2 instruction when the CPU has it.
 */
uint32_t pp_crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t pp_crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* The SSE4.2 path; falls back to the table when the CPU or compiler lacks it. */
uint32_t pp_crc32c_hw(uint32_t crc, const void *buf, size_t len);
/* Returns 1 if pp_crc32c_hw really uses the crc32 instruction here. */
int pp_crc32c_hw_available(void);

#endif
