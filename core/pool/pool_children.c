/* The loop's side of the pool's worker processes: the supervisor's
 * callbacks (supervisor.h). prepare() makes a worker's link and its
 * arguments, started() counts it, exited() settles the jobs it had in
 * flight, broken() fails every call once no worker will run again.
 *
 * When a worker dies, its jobs of several tasks are split into single
 * tasks and requeued (the death is charged to no task yet); a single
 * task's death counts as an attempt, and past `retries` the task fails
 * with the worker's exit and last stderr lines. The link is closed before
 * anything is requeued, so an answer still buffered from the dead worker
 * is never delivered next to its retry; then mpx_arena_reclaim(pid) frees
 * whatever blocks the dead worker owned. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pool_internal.h"

static const char *exit_text(int code, char *buf, size_t n) {
  if (code >= 0) {
    snprintf(buf, n, "exited with code %d", code);
  } else {
    const char *abbr = sigabbrev_np(-code);
    snprintf(buf, n, "was killed by signal %d (SIG%s)", -code,
             abbr ? abbr : "?");
  }
  return buf;
}

static void on_link_close(mpx_link_t *l, int status, void *arg) {
  worker_t *w = arg;
  if (w->link == l) w->link = NULL;
  /* End of file: the worker is exiting, and its pidfd will say how. Any
   * other end of the link while it lives is a protocol failure. */
  if (status != MPX_EPIPE && w->alive) mpx__sup_kill(w->p->sup, w->idx, SIGKILL);
}

static void release_start(void *arg, unsigned idx) {
  mpx_pool_t *p = arg;
  worker_t *w = &p->w[idx];
  if (w->child_fd >= 0) close(w->child_fd);
  w->child_fd = -1;
  free(w->wargs);
  w->wargs = NULL;
}

/* prepare(), first step: a new link to the worker (the pool's end in the
 * hub, the child's end in w->child_fd). */
static int prepare_link(mpx_pool_t *p, worker_t *w) {
  int sv[2], rc;
  if (w->link) { /* left by a start that failed after adding it */
    mpx_link_t *l = w->link;
    w->link = NULL;
    mpx_link_close(l);
  }
  if (p->zygote && !mpx__zygote_alive(p->zygote)) {
    /* Killed from outside (its workers died with it): it cannot be made
     * again now that the pool has its thread, so fork from here. */
    MPX__WARN("%s: its zygote died; forking workers from this process from "
              "now on", p->name);
    mpx__zygote_free(p->zygote);
    p->zygote = NULL;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return mpx__err_errno("%s: socketpair", p->name);
  if ((rc = mpx_hub_add(p->hub, sv[0], mpx__pool_on_msg, on_link_close, w,
                        &w->link)) != 0) {
    close(sv[0]);
    close(sv[1]);
    return rc;
  }
  w->child_fd = sv[1];
  return 0;
}

/* How a worker finds the initializer (pm_wargs_t.init_*): `s` is "" or
 * the spec, object path or NUL-terminated string; `owned` is freed after. */
typedef struct {
  uint8_t kind;
  uint64_t addr;
  const char *s;
  char *owned;
} init_ref_t;

static int initializer_ref(mpx_pool_t *p, init_ref_t *ir) {
  int rc;
  *ir = (init_ref_t){.kind = PM_FN_NONE, .s = ""};
  if (p->o.initializer_spec) {
    ir->kind = PM_FN_SPEC;
    ir->s = p->o.initializer_spec;
  } else if (p->o.initializer) {
    mpx_target_fn f = (mpx_target_fn)(void *)p->o.initializer;
    if (p->o.start_method == MPX_START_FORK) {
      ir->kind = PM_FN_PTR;
      ir->addr = (uint64_t)(uintptr_t)f;
    } else if (p->o.start_method == MPX_START_FORKSERVER) {
      mpx__target_loc_t loc;
      if ((rc = mpx__target_locate(f, &loc)) != 0) return rc;
      ir->kind = PM_FN_LOC;
      ir->addr = loc.offset;
      ir->s = ir->owned = (char *)loc.object;
    } else {
      if ((rc = mpx__target_spec_of(f, &ir->owned)) != 0) return rc;
      ir->kind = PM_FN_SPEC;
      ir->s = ir->owned;
    }
  }
  return 0;
}

/* The worker's arguments in w->wargs (*total bytes) and the descriptors it
 * is passed in w->pass (*npass): its link, and the arena's segment unless
 * it is inherited (fork). */
static int make_wargs(mpx_pool_t *p, worker_t *w, int stderr_fd,
                      const init_ref_t *ir, size_t *total, size_t *npass) {
  size_t sl = strlen(ir->s) + 1;
  *total = sizeof(pm_wargs_t) + sl + p->o.initargs_len;
  w->wargs = malloc(*total);
  if (w->wargs == NULL) return mpx__err(MPX_ENOMEM, "%s: out of memory", p->name);
  /* The arena: inherited under fork, its segment's descriptor otherwise. */
  *npass = 0;
  w->pass[(*npass)++] = w->child_fd;
  int arena_fd = -1;
  uint64_t arena_addr = 0;
  if (p->arena && p->o.start_method == MPX_START_FORK)
    arena_addr = (uint64_t)(uintptr_t)p->arena;
  else if (p->arena)
    w->pass[(*npass)++] = arena_fd = mpx_segment_fd(mpx_arena_segment(p->arena));
  pm_wargs_t a = {.version = PM_WARGS_VERSION, .index = w->idx,
                  .nworkers = p->n, .link_fd = w->child_fd,
                  .stderr_fd = stderr_fd, .transport = (int32_t)p->transport,
                  .arena_fd = arena_fd, .arena_addr = arena_addr,
                  .init_kind = ir->kind, .init_addr = ir->addr,
                  .init_str_len = (uint32_t)sl,
                  .initargs_len = (uint32_t)p->o.initargs_len};
  snprintf(a.name, sizeof a.name, "%s", p->name);
  memcpy(w->wargs, &a, sizeof a);
  memcpy(w->wargs + sizeof a, ir->s, sl);
  if (p->o.initargs_len)
    memcpy(w->wargs + sizeof a + sl, p->o.initargs, p->o.initargs_len);
  return 0;
}

static int prepare(void *arg, unsigned idx, mpx__sup_start_t *st) {
  mpx_pool_t *p = arg;
  worker_t *w = &p->w[idx];
  init_ref_t ir;
  size_t total = 0, npass = 0;
  int rc = prepare_link(p, w);
  if (rc == 0) rc = initializer_ref(p, &ir);
  if (rc != 0) return rc;
  rc = make_wargs(p, w, st->stderr_fd, &ir, &total, &npass);
  free(ir.owned);
  if (rc != 0) return rc;
  memset(&st->opts, 0, sizeof st->opts);
  st->opts.target = mpx_pool_worker_main;
  st->opts.args = w->wargs;
  st->opts.args_len = total;
  st->opts.start_method = p->o.start_method;
  st->opts.daemon = true;
  st->opts.pass_fds = w->pass;
  st->opts.n_pass_fds = npass;
  st->zygote = p->zygote; /* never a fork from this threaded process */
  st->release = release_start;
  w->ready = w->retiring = w->quit_sent = false;
  w->tasks = 0;
  w->ndefined = 0;
  return 0;
}

static void started(void *arg, unsigned idx, pid_t pid) {
  mpx_pool_t *p = arg;
  worker_t *w = &p->w[idx];
  w->pid = pid;
  w->alive = true;
  w->job_time = 0; /* a new process: its pace is not known yet */
  pthread_mutex_lock(&p->mu);
  p->st.started++;
  p->alive++;
  pthread_mutex_unlock(&p->mu);
}

/* exited(), after the link is closed (no answer of the worker will be
 * read): free the blocks it held (a result being written, an answer that
 * was not read). */
static void reclaim_blocks(mpx_pool_t *p, unsigned idx, pid_t pid) {
  if (p->arena == NULL || pid <= 0) return;
  int n = mpx_arena_reclaim(p->arena, pid);
  if (n > 0) {
    MPX__DEBUG("%s: %d arena block%s of worker %u (pid %d) reclaimed",
               p->name, n, n == 1 ? "" : "s", idx, (int)pid);
    pthread_mutex_lock(&p->mu);
    p->st.arena_reclaimed += (uint64_t)n;
    pthread_mutex_unlock(&p->mu);
  }
}

/* Takes the dead worker's jobs in flight. Only the first one was running:
 * the others go back untouched, ahead of everything else, in their order.
 * Returns the first, alone, or NULL. */
static job_t *take_inflight(mpx_pool_t *p, worker_t *w) {
  job_t *j = w->inflight;
  w->inflight = NULL;
  w->ninflight = 0;
  job_t *rest = j ? j->next : NULL;
  if (rest) {
    job_t *last = rest;
    rest->retried = true;
    while (last->next) {
      last = last->next;
      last->retried = true;
    }
    last->next = p->retry;
    if (p->retry == NULL) p->retry_tail = last;
    p->retry = rest;
  }
  if (j) j->next = NULL;
  return j;
}

/* The job that was running when its worker died (`how`: exit_text). */
static void charge_job(mpx_pool_t *p, job_t *j, unsigned idx, pid_t pid,
                       const char *how, const char *tail) {
  char msg[1024];
  pthread_mutex_lock(&p->mu);
  bool dropped = j->r->cancelled || j->r->complete;
  pthread_mutex_unlock(&p->mu);
  if (dropped) {
    mpx__pool_job_end(p, j);
  } else if (j->n > 1) {
    mpx__pool_split_job(p, j); /* the one that killed it fails alone */
  } else if (++j->attempts > (unsigned)(p->retries < 0 ? 0 : p->retries)) {
    if (j->timed_out)
      snprintf(msg, sizeof msg,
               "task timed out after %g s (worker %u, pid %d, killed)%s%s",
               p->o.task_timeout, idx, (int)pid, tail[0] ? "; stderr: " : "",
               tail);
    else
      snprintf(msg, sizeof msg, "worker %u (pid %d) %s after %u attempt%s%s%s",
               idx, (int)pid, how, j->attempts, j->attempts > 1 ? "s" : "",
               tail[0] ? "; last stderr:\n" : "", tail);
    mpx__pool_fail_job(p, j, j->timed_out ? MPX_ETIMEDOUT : MPX_EWORKER, msg);
  } else {
    j->timed_out = false;
    pthread_mutex_lock(&p->mu);
    p->st.retries++;
    pthread_mutex_unlock(&p->mu);
    mpx__pool_requeue(p, j, true);
  }
}

static void exited(void *arg, unsigned idx, pid_t pid, int code,
                   const char *tail) {
  mpx_pool_t *p = arg;
  worker_t *w = &p->w[idx];
  if (w->link) {
    mpx_link_t *l = w->link;
    w->link = NULL;
    mpx_link_close(l); /* nothing more from the dead worker */
  }
  bool was_alive = w->alive;
  w->alive = w->ready = false;
  reclaim_blocks(p, idx, pid);
  char how[96];
  exit_text(code, how, sizeof how);
  MPX__DEBUG("%s: worker %u (pid %d) %s with %u job%s in flight", p->name, idx,
             (int)pid, how, w->ninflight, w->ninflight == 1 ? "" : "s");
  job_t *j = take_inflight(p, w);
  if (j) charge_job(p, j, idx, pid, how, tail);
  pthread_mutex_lock(&p->mu);
  p->st.restarts = mpx__sup_restarts(p->sup);
  if (was_alive) p->alive--;
  if (p->stopping && p->alive == 0) {
    p->workers_gone = true;
    pthread_cond_broadcast(&p->cv);
    if (p->shut) mpx__pool_wake(p); /* the shutdown goes on (outside this callback) */
  }
  pthread_mutex_unlock(&p->mu);
  mpx__pool_pump(p);
  mpx__pool_sweep(p);
}

/* The supervisor will run no worker again (restarts past the intensity,
 * or none left under a policy that restarts none): every pending and
 * later call fails with MPX_EBROKEN and `why`. */
static void broken(void *arg, const char *why) {
  mpx_pool_t *p = arg;
  pthread_mutex_lock(&p->mu);
  p->broken = true;
  p->st.broken = true;
  snprintf(p->why, sizeof p->why, "%s", why);
  for (req_t *r = p->incoming; r; r = r->next) mpx__pool_req_finish(p, r, MPX_EBROKEN);
  for (req_t *r = p->active; r; r = r->next) mpx__pool_req_finish(p, r, MPX_EBROKEN);
  p->cancels = true; /* requests still incoming are dropped at the wake */
  pthread_mutex_unlock(&p->mu);
  MPX__ERROR("broken: %s", why); /* why names the pool (the supervisor's name) */
  mpx__pool_drop_dead(p);
  mpx__pool_sweep(p);
  mpx__pool_wake(p);
}

int mpx__pool_sup_new(mpx_pool_t *p) {
  const mpx_pool_opts_t *o = &p->o;
  mpx__sup_opts_t so = {
      .name = p->name, .n = p->n, .restart = (mpx__restart_t)o->restart,
      .max_restarts = o->max_restarts ? o->max_restarts : 10 + 2 * p->n,
      .period = o->restart_period > 0 ? o->restart_period : 5,
      .backoff_min = o->backoff_min > 0 ? o->backoff_min : 0.01,
      .backoff_max = o->backoff_max > 0 ? o->backoff_max : 1.0,
      .quiet = o->quiet, .arg = p, .prepare = prepare, .started = started,
      .exited = exited, .broken = broken, .empty = broken};
  return mpx__sup_new(&p->sup, p->L, &so);
}
