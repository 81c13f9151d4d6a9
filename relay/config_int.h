/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * config_int.h: private to config*.c: the reading state and the typed readers of config.c
 * that every section loader uses, and the section loaders of config_listener.c and
 * config_backend.c. Every reader returns 0 (a missing optional setting keeps its default)
 * or -1 after writing "FILE:LINE: message" into the error buffer.
 */
#ifndef EXRELAY_CONFIG_INT_H
#define EXRELAY_CONFIG_INT_H

#include "cfg.h"

/* Reading state: the configuration being filled and the error buffer. */
struct config_ctx {
	struct config *cfg;
	char *err;
	size_t errlen;
	bool unusable_file;	/* the error is a named file that cannot be used */
};

/* Writes "FILE:LINE: message" for setting s (or "FILE: message") into the error buffer; -1. */
int config_fail(struct config_ctx *x, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Refuses any member of group g whose name is not in the NULL-terminated list allowed. */
int config_check_known(struct config_ctx *x, const config_setting_t *g, const char *what,
    const char *const *allowed);

/* Refuses s unless it is a group { ... }. */
int config_want_group(struct config_ctx *x, const config_setting_t *s, const char *what);

/* A group g of the file (what names it in messages) with only the allowed members. */
int config_want_section(struct config_ctx *x, const config_setting_t *g, const char *what,
    const char *const *allowed);

/* Optional members of group g, by type; *out keeps its value when the member is absent. */
int config_get_str(struct config_ctx *x, const config_setting_t *g, const char *name,
    const char **out, bool nonempty);
int config_get_int(struct config_ctx *x, const config_setting_t *g, const char *name, int *out,
    long long lo, long long hi);
int config_get_duration(struct config_ctx *x, const config_setting_t *g, const char *name,
    double *out, double lo, double hi);
int config_get_number(struct config_ctx *x, const config_setting_t *g, const char *name,
    double *out, double lo, double hi, const char *unit);
int config_get_bool(struct config_ctx *x, const config_setting_t *g, const char *name, bool *out);

/* A list of strings into a NULL-terminated malloc'd array (*out NULL, *n 0 when absent). */
int config_get_strings(struct config_ctx *x, const config_setting_t *g, const char *name,
    const char ***out, size_t *n);

/* A keyword: *out gets its index in the NULL-terminated table kw (config_*_kw below). */
int config_get_enum(struct config_ctx *x, const config_setting_t *g, const char *name, int *out,
    const char *const *kw);

/* The line of element i of the list member name of g (for messages about one element). */
const config_setting_t *config_elem(const config_setting_t *g, const char *name, size_t i);
void config_free_const(const void *p);
int config_get_prefixes(struct config_ctx *x, const config_setting_t *g, const char *name,
    struct addr_prefix **out, size_t *n);

/* Keyword tables generated from the X-macro tables of cfg.h, indexed by value. */
extern const char *const config_role_kw[];
extern const char *const config_pp_mode_kw[];
extern const char *const config_send_proxy_kw[];
extern const char *const config_srv_admin_kw[];
extern const char *const config_cb_mode_kw[];

/* Section loaders, one element of a list each (p: the element to fill); 0 or -1. */
int config_listener_load(struct config_ctx *x, config_setting_t *g, void *p);
int config_backend_load(struct config_ctx *x, config_setting_t *g, void *p);
int config_backend_route_load(struct config_ctx *x, config_setting_t *g, void *p);

/* config_server.c */
int config_servers_load(struct config_ctx *x, config_setting_t *g, struct cfg_backend *b);
int config_check_load(struct config_ctx *x, config_setting_t *g, struct cfg_backend *b);
int config_protos_load(struct config_ctx *x);
int config_admin_socket_load(struct config_ctx *x, const config_setting_t *global);
void config_protos_free(struct config *c);

/* config_security.c */
int config_security_load(struct config_ctx *x, const config_setting_t *root);
int config_guard_load(struct config_ctx *x, const config_setting_t *root);
int config_route_acl_load(struct config_ctx *x, config_setting_t *g, size_t i);
void config_security_free(struct config *c);

#endif
