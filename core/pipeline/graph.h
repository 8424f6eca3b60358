/* The pipeline as a graph: its stages, and the edges from a stage's
 * output port to the stages that read it (`inputs:`, docs/config.md).
 * Built once every stage's plugin is loaded (its kind and ports are
 * needed), and checked: every error is a configuration error at the
 * file:line:column of what is wrong.
 *
 * A stage without `inputs:` reads port 0 of the stage before it in the
 * file (a source reads nothing), so a file without any `inputs:` is the
 * chain it always was. Internal to core/pipeline. */
#ifndef MPX_CORE_GRAPH_H
#define MPX_CORE_GRAPH_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "mpx/plugin.h"

/* What the graph needs to know of stage i's plugin. */
typedef struct {
  mpx_plugin_kind_t kind;
  unsigned n_ports;          /* >= 1 */
  const char *const *ports;  /* their names, port 0 first */
} mpx__gnode_t;

/* Stage `from`'s port `port` feeds stage `to`. */
typedef struct {
  uint32_t from, port, to;
} mpx__gedge_t;

typedef struct {
  size_t n;                  /* stages, as in the config (file order) */
  mpx__gedge_t *edges;       /* sorted by (from, port, to); no duplicates */
  size_t n_edges;
  uint32_t *order;           /* the n stages in a topological order: every
                              * stage after all it reads; among those free
                              * to go, file order first */
  int linear;                /* no stage gives inputs: the old chain rules */
} mpx__graph_t;

/* Builds g (the caller's; mpx__graph_free) from c's stages and nodes[i]
 * for stage i. 0, MPX_ENOMEM, or MPX_ECONFIG (mpx__cfg_error_at) for:
 *  - an input that names no stage, or a port its stage does not have
 *    (the message lists the ports it has), or the same input twice;
 *  - a source given inputs or partition_by (it reads nothing), or a stage
 *    other than a source with none (the first stage in the file, not a
 *    source);
 *  - a stage without inputs after a sink (which emits nothing);
 *  - an input that is a sink (a sink emits nothing);
 *  - a cycle (the message names its stages in order);
 *  - in a graph file (not linear): a stage that is not a sink and that no
 *    stage reads. A linear file may end in any stage, as before. */
int mpx__graph_build(mpx__graph_t *g, const mpx__cfg_t *c, const mpx__gnode_t *nodes);
void mpx__graph_free(mpx__graph_t *g); /* accepts a zeroed g */

/* The edges out of stage i, port p: a run of g->edges (first, count). */
void mpx__graph_outs(const mpx__graph_t *g, uint32_t i, uint32_t p, size_t *first,
                     size_t *count);
/* How many edges enter stage i. */
size_t mpx__graph_n_in(const mpx__graph_t *g, uint32_t i);

/* Writes the graph as Graphviz DOT (`dot -Tsvg` draws it): one node per
 * stage, labelled with its name, plugin and kind (and workers or
 * partitions when given), one edge per input, labelled with the port
 * when it is not port 0 of a one-port plugin. 0 or -errno. */
int mpx__graph_dot(const mpx__graph_t *g, const mpx__cfg_t *c, const mpx__gnode_t *nodes,
                   FILE *f);

#endif
