/* The pipeline as a graph (graph.h): each stage's inputs resolved to
 * edges, checked, put in a topological order, and drawn as Graphviz DOT.
 * Every error is a configuration error at the position of what is wrong
 * (the input entry; the stage itself when it has no entry to blame). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "graph.h"
#include "internal.h"

/* ---- naming things in messages -------------------------------------------- */

static const char *port_name(const mpx__gnode_t *nd, uint32_t p) {
  return nd->ports != NULL && p < nd->n_ports ? nd->ports[p] : "out";
}

static unsigned n_ports(const mpx__gnode_t *nd) {
  return nd->n_ports ? nd->n_ports : 1;
}

/* Appends s to out (cap bytes), ", " first when out is not empty; "..."
 * once there is no more room. */
static void list_add(char *out, size_t cap, const char *s) {
  size_t n = strlen(out);
  if (n >= 3 && strcmp(out + n - 3, "...") == 0) return;
  if (n + strlen(s) + 8 >= cap) {
    snprintf(out + n, cap - n, "%s...", n ? ", " : "");
    return;
  }
  snprintf(out + n, cap - n, "%s%s", n ? ", " : "", s);
}

static void stage_list(const mpx__cfg_t *c, char *out, size_t cap) {
  out[0] = '\0';
  for (size_t i = 0; i < c->n_stages; i++) list_add(out, cap, c->stages[i].name);
}

static void port_list(const mpx__gnode_t *nd, char *out, size_t cap) {
  out[0] = '\0';
  for (unsigned p = 0; p < n_ports(nd); p++) list_add(out, cap, port_name(nd, p));
}

/* "STAGE", or "STAGE.PORT" when the stage has several ports. */
static const char *out_name(char *buf, size_t cap, const mpx__cfg_t *c,
                            const mpx__gnode_t *nodes, uint32_t from, uint32_t port) {
  if (n_ports(&nodes[from]) > 1)
    snprintf(buf, cap, "%s.%s", c->stages[from].name, port_name(&nodes[from], port));
  else
    snprintf(buf, cap, "%s", c->stages[from].name);
  return buf;
}

static const char *kind_name(mpx_plugin_kind_t k) { return mpx_plugin_kind_name(k); }

/* ---- edges ----------------------------------------------------------------- */

typedef struct {
  mpx__gedge_t *v;
  size_t n, cap;
} edges_t;

static int add_edge(edges_t *e, uint32_t from, uint32_t port, uint32_t to) {
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 16;
    mpx__gedge_t *v = realloc(e->v, cap * sizeof *v);
    if (v == NULL) return mpx__err(MPX_ENOMEM, "out of memory");
    e->v = v;
    e->cap = cap;
  }
  e->v[e->n++] = (mpx__gedge_t){from, port, to};
  return 0;
}

static int edge_cmp(const void *a, const void *b) {
  const mpx__gedge_t *x = a, *y = b;
  if (x->from != y->from) return x->from < y->from ? -1 : 1;
  if (x->port != y->port) return x->port < y->port ? -1 : 1;
  if (x->to != y->to) return x->to < y->to ? -1 : 1;
  return 0;
}

/* ---- resolving inputs ------------------------------------------------------ */

typedef struct {
  const mpx__cfg_t *c;
  const mpx__gnode_t *nodes;
  edges_t e;
} build_t;

static long find_stage(const mpx__cfg_t *c, const char *name, size_t n) {
  for (size_t i = 0; i < c->n_stages; i++)
    if (strlen(c->stages[i].name) == n && memcmp(c->stages[i].name, name, n) == 0)
      return (long)i;
  return -1;
}

/* Stage i's input j, "STAGE" or "STAGE.PORT", into (from, port). */
static int resolve(build_t *b, size_t i, size_t j, uint32_t *from, uint32_t *port) {
  const mpx__cfg_stage_t *st = &b->c->stages[i];
  const char *in = st->inputs[j], *dot = strchr(in, '.');
  mpx__cfg_pos_t at = st->inputs_at[j];
  char list[256];
  long s = find_stage(b->c, in, dot ? (size_t)(dot - in) : strlen(in));
  if (s < 0) {
    stage_list(b->c, list, sizeof list);
    return mpx__cfg_error_at(b->c, at.line, at.col,
                             "stage '%s': input '%s' names no stage (the stages: %s)",
                             st->name, in, list);
  }
  const mpx__gnode_t *nd = &b->nodes[s];
  *from = (uint32_t)s;
  *port = 0;
  if (dot != NULL) {
    unsigned p;
    for (p = 0; p < n_ports(nd) && strcmp(port_name(nd, p), dot + 1) != 0; p++) {}
    if (p == n_ports(nd)) {
      port_list(nd, list, sizeof list);
      return mpx__cfg_error_at(b->c, at.line, at.col,
                               "stage '%s': input '%s': stage '%s' (plugin '%s') has no "
                               "port '%s' (its ports: %s)",
                               st->name, in, b->c->stages[s].name, b->c->stages[s].plugin,
                               dot + 1, list);
    }
    *port = p;
  }
  if (nd->kind == MPX_PLUGIN_SINK)
    return mpx__cfg_error_at(b->c, at.line, at.col,
                             "stage '%s': input '%s' is a sink (plugin '%s'), which emits "
                             "nothing to read (expected a source, map or reduce)",
                             st->name, in, b->c->stages[s].plugin);
  return 0;
}

/* The edges into stage i from its `inputs:`. */
static int given_inputs(build_t *b, size_t i) {
  const mpx__cfg_stage_t *st = &b->c->stages[i];
  size_t first = b->e.n;
  char name[160];
  int rc;
  if (b->nodes[i].kind == MPX_PLUGIN_SOURCE)
    return mpx__cfg_error_at(b->c, st->inputs_key_at.line, st->inputs_key_at.col,
                             "stage '%s' is a source (plugin '%s'): a source reads "
                             "nothing, so it takes no 'inputs'",
                             st->name, st->plugin);
  for (size_t j = 0; j < st->n_inputs; j++) {
    uint32_t from = 0, port = 0;
    if ((rc = resolve(b, i, j, &from, &port)) != 0) return rc;
    for (size_t k = first; k < b->e.n; k++)
      if (b->e.v[k].from == from && b->e.v[k].port == port)
        return mpx__cfg_error_at(b->c, st->inputs_at[j].line, st->inputs_at[j].col,
                                 "stage '%s' reads '%s' twice (expected each input "
                                 "once)",
                                 st->name, out_name(name, sizeof name, b->c, b->nodes,
                                                    from, port));
    if ((rc = add_edge(&b->e, from, port, (uint32_t)i)) != 0) return rc;
  }
  return 0;
}

/* A stage without `inputs:` reads port 0 of the stage before it; a source
 * reads nothing. */
static int implicit_input(build_t *b, size_t i) {
  const mpx__cfg_stage_t *st = &b->c->stages[i];
  mpx_plugin_kind_t k = b->nodes[i].kind;
  if (k == MPX_PLUGIN_SOURCE) return 0;
  if (i == 0)
    return mpx__cfg_error_at(b->c, st->line, st->col,
                             "stage '%s' (plugin '%s') is a %s with nothing to read: "
                             "the first stage must be a source, or be given 'inputs'",
                             st->name, st->plugin, kind_name(k));
  if (b->nodes[i - 1].kind == MPX_PLUGIN_SINK)
    return mpx__cfg_error_at(b->c, st->line, st->col,
                             "stage '%s' reads the stage before it, '%s', a sink, which "
                             "emits nothing (expected 'inputs' naming what it reads)",
                             st->name, b->c->stages[i - 1].name);
  return add_edge(&b->e, (uint32_t)(i - 1), 0, (uint32_t)i);
}

/* Partitions split what a stage reads; a source reads nothing. */
static int check_partitions(build_t *b, size_t i) {
  const mpx__cfg_stage_t *st = &b->c->stages[i];
  if (!st->partitioned || b->nodes[i].kind != MPX_PLUGIN_SOURCE) return 0;
  return mpx__cfg_error_at(b->c, st->partition_at.line, st->partition_at.col,
                           "stage '%s' is a source (plugin '%s'): 'partition_by' splits "
                           "what a stage reads, and a source reads nothing",
                           st->name, st->plugin);
}

/* ---- order and cycles ------------------------------------------------------ */

/* The first edge out of stage i (edges sorted by from). */
static size_t first_out(const mpx__graph_t *g, uint32_t i) {
  size_t lo = 0, hi = g->n_edges;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (g->edges[mid].from < i) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* Kahn's algorithm; among the stages free to go, the first in the file.
 * Returns how many stages were ordered (fewer than n: a cycle). */
static size_t topo_order(mpx__graph_t *g, size_t *indeg, bool *done) {
  size_t k = 0;
  for (size_t e = 0; e < g->n_edges; e++) indeg[g->edges[e].to]++;
  for (;;) {
    size_t i;
    for (i = 0; i < g->n && (done[i] || indeg[i] > 0); i++) {}
    if (i == g->n) return k;
    done[i] = true;
    g->order[k++] = (uint32_t)i;
    for (size_t e = first_out(g, (uint32_t)i); e < g->n_edges && g->edges[e].from == i; e++)
      indeg[g->edges[e].to]--;
  }
}

/* A stage left out of the order has a predecessor also left out: walk back
 * along the first such one until a stage repeats. The repeat closes a
 * cycle, named from its first stage in the file. */
static int cycle_error(const mpx__graph_t *g, const mpx__cfg_t *c, const bool *done) {
  uint32_t *walk = malloc(g->n * sizeof *walk), *cyc = malloc(g->n * sizeof *cyc);
  size_t n = 0, start = 0, len, low = 0;
  char path[400] = "";
  int rc;
  if (walk == NULL || cyc == NULL) {
    free(walk);
    free(cyc);
    return mpx__err(MPX_ENOMEM, "out of memory");
  }
  uint32_t cur = 0;
  while (done[cur]) cur++;
  for (;;) {
    for (start = 0; start < n && walk[start] != cur; start++) {}
    if (start < n) break;
    walk[n++] = cur;
    uint32_t pred = UINT32_MAX;
    for (size_t e = 0; e < g->n_edges; e++)
      if (g->edges[e].to == cur && !done[g->edges[e].from] && g->edges[e].from < pred)
        pred = g->edges[e].from;
    cur = pred;
  }
  /* walk[start..n) goes against the edges: reversed, it is the cycle. */
  len = n - start;
  for (size_t k = 0; k < len; k++) cyc[k] = walk[n - 1 - k];
  for (size_t k = 1; k < len; k++)
    if (cyc[k] < cyc[low]) low = k;
  for (size_t k = 0; k <= len; k++) {
    const char *name = c->stages[cyc[(low + k) % len]].name;
    size_t used = strlen(path);
    if (used + strlen(name) + 8 >= sizeof path) {
      snprintf(path + used, sizeof path - used, " -> ...");
      break;
    }
    snprintf(path + used, sizeof path - used, "%s%s", k ? " -> " : "", name);
  }
  const mpx__cfg_stage_t *st = &c->stages[cyc[low]];
  rc = mpx__cfg_error_at(c, st->line, st->col,
                         "stage '%s' is in a cycle: %s (expected no stage to read its "
                         "own outputs, directly or through others)",
                         st->name, path);
  free(walk);
  free(cyc);
  return rc;
}

static int order_stages(mpx__graph_t *g, const mpx__cfg_t *c) {
  size_t *indeg = calloc(g->n, sizeof *indeg);
  bool *done = calloc(g->n, sizeof *done);
  int rc = 0;
  if (indeg == NULL || done == NULL) {
    rc = mpx__err(MPX_ENOMEM, "out of memory");
  } else if (topo_order(g, indeg, done) < g->n) {
    rc = cycle_error(g, c, done);
  }
  free(indeg);
  free(done);
  return rc;
}

/* In a graph file, what a stage emits must go somewhere: a stage that is
 * not a sink and that no stage reads is a mistake (a typo in an input). */
static int check_read(const mpx__graph_t *g, const mpx__cfg_t *c, const mpx__gnode_t *nodes) {
  if (g->linear) return 0;
  for (uint32_t i = 0; i < g->n; i++) {
    size_t e = first_out(g, i);
    if (nodes[i].kind == MPX_PLUGIN_SINK || (e < g->n_edges && g->edges[e].from == i))
      continue;
    const mpx__cfg_stage_t *st = &c->stages[i];
    return mpx__cfg_error_at(c, st->line, st->col,
                             "stage '%s' (plugin '%s', a %s) is read by no stage: its "
                             "outputs would be lost (expected a stage with 'inputs: [%s]', "
                             "or a sink)",
                             st->name, st->plugin, kind_name(nodes[i].kind), st->name);
  }
  return 0;
}

/* ---- the graph ------------------------------------------------------------- */

static int build_edges(build_t *b, mpx__graph_t *g) {
  int rc = 0;
  for (size_t i = 0; i < b->c->n_stages && rc == 0; i++) {
    rc = check_partitions(b, i);
    if (rc == 0) rc = b->c->stages[i].inputs_given ? given_inputs(b, i) : implicit_input(b, i);
  }
  if (rc != 0) return rc;
  qsort(b->e.v, b->e.n, sizeof *b->e.v, edge_cmp);
  g->edges = b->e.v;
  g->n_edges = b->e.n;
  b->e.v = NULL;
  return 0;
}

int mpx__graph_build(mpx__graph_t *g, const mpx__cfg_t *c, const mpx__gnode_t *nodes) {
  build_t b = {.c = c, .nodes = nodes};
  int rc;
  memset(g, 0, sizeof *g);
  g->n = c->n_stages;
  g->linear = 1;
  for (size_t i = 0; i < c->n_stages; i++)
    if (c->stages[i].inputs_given) g->linear = 0;
  if ((g->order = calloc(g->n ? g->n : 1, sizeof *g->order)) == NULL)
    return mpx__err(MPX_ENOMEM, "out of memory");
  rc = build_edges(&b, g);
  free(b.e.v);
  if (rc == 0) rc = order_stages(g, c);
  if (rc == 0) rc = check_read(g, c, nodes);
  if (rc != 0) mpx__graph_free(g);
  return rc;
}

void mpx__graph_free(mpx__graph_t *g) {
  free(g->edges);
  free(g->order);
  memset(g, 0, sizeof *g);
}

void mpx__graph_outs(const mpx__graph_t *g, uint32_t i, uint32_t p, size_t *first,
                     size_t *count) {
  size_t e = first_out(g, i);
  while (e < g->n_edges && g->edges[e].from == i && g->edges[e].port < p) e++;
  *first = e;
  while (e < g->n_edges && g->edges[e].from == i && g->edges[e].port == p) e++;
  *count = e - *first;
}

size_t mpx__graph_n_in(const mpx__graph_t *g, uint32_t i) {
  size_t n = 0;
  for (size_t e = 0; e < g->n_edges; e++) n += g->edges[e].to == i;
  return n;
}

/* ---- DOT ------------------------------------------------------------------- */

/* A DOT string's content: '"' and '\' escaped (a '\' would start one of
 * DOT's label escapes), control characters as '?'. */
static void dot_text(FILE *f, const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fputc('\\', f);
    fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, f);
  }
}

static const char *shape(mpx_plugin_kind_t k) {
  switch (k) {
  case MPX_PLUGIN_SOURCE: return "invhouse";
  case MPX_PLUGIN_SINK: return "house";
  case MPX_PLUGIN_REDUCE: return "box3d";
  default: return "box";
  }
}

/* "NAME\nPLUGIN (KIND)", then the workers when the stage gives them, and
 * its partitions. */
static void dot_node(FILE *f, const mpx__cfg_stage_t *st, const mpx__gnode_t *nd) {
  fputs("  \"", f);
  dot_text(f, st->name);
  fprintf(f, "\" [shape=%s, label=\"", shape(nd->kind));
  dot_text(f, st->name);
  fputs("\\n", f);
  dot_text(f, st->plugin);
  fprintf(f, " (%s)", kind_name(nd->kind));
  if (st->opts.set & (1u << MPX__CFG_WORKERS)) {
    if (st->opts.workers) fprintf(f, "\\nworkers: %u", st->opts.workers);
    else fputs("\\nworkers: auto", f);
  }
  if (st->partitioned) {
    if (st->partitions) fprintf(f, "\\npartitioned by key (%u)", st->partitions);
    else fputs("\\npartitioned by key (one per worker)", f);
  }
  fputs("\"];\n", f);
}

/* The sources on the first rank, the sinks on the last. */
static void dot_rank(FILE *f, const mpx__cfg_t *c, const mpx__gnode_t *nodes,
                     mpx_plugin_kind_t k, const char *rank) {
  bool any = false;
  for (size_t i = 0; i < c->n_stages; i++) {
    if (nodes[i].kind != k) continue;
    if (!any) fprintf(f, "  {rank=%s;", rank);
    fputs(" \"", f);
    dot_text(f, c->stages[i].name);
    fputs("\";", f);
    any = true;
  }
  if (any) fputs(" }\n", f);
}

int mpx__graph_dot(const mpx__graph_t *g, const mpx__cfg_t *c, const mpx__gnode_t *nodes,
                   FILE *f) {
  errno = 0;
  fputs("digraph \"", f);
  dot_text(f, c->name);
  fputs("\" {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=11];\n"
        "  edge [fontname=\"Helvetica\", fontsize=10];\n",
        f);
  for (size_t i = 0; i < g->n; i++) dot_node(f, &c->stages[i], &nodes[i]);
  dot_rank(f, c, nodes, MPX_PLUGIN_SOURCE, "source");
  dot_rank(f, c, nodes, MPX_PLUGIN_SINK, "sink");
  for (size_t e = 0; e < g->n_edges; e++) {
    const mpx__gedge_t *x = &g->edges[e];
    fputs("  \"", f);
    dot_text(f, c->stages[x->from].name);
    fputs("\" -> \"", f);
    dot_text(f, c->stages[x->to].name);
    fputc('"', f);
    if (n_ports(&nodes[x->from]) > 1) {
      fputs(" [label=\"", f);
      dot_text(f, port_name(&nodes[x->from], x->port));
      fputs("\"]", f);
    }
    fputs(";\n", f);
  }
  fputs("}\n", f);
  if (fflush(f) != 0 || ferror(f)) return errno ? -errno : -EIO;
  return 0;
}
