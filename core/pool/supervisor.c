/* The supervisor: worker slots on a libuv loop, each process watched
 * through its pidfd, its stderr relayed and kept, restarts decided by an
 * OTP-style policy. See supervisor.h for the contract.
 *
 * Each start of a slot is a `run`: the process handle, a uv_poll on its
 * pidfd, a uv_poll on the read end of its stderr pipe, the line being
 * assembled and the ring of its last lines. A run is closed when its
 * process has been reported (exited) and freed by the last close callback
 * of its handles. Each slot keeps one uv_timer for the whole life of the
 * supervisor: backoff before a restart, the report of a failed start
 * (always from the loop, never from inside the start), and retries while
 * a forkserver child's exit status is on its way. The supervisor itself
 * is freed by the last close callback once mpx__sup_free was called. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forkserver.h"
#include "internal.h"
#include "supervisor.h"

#define SUP_MAX_PASS_FDS 13
#define SUP_CHUNK 4096
/* Chunks read per readiness callback, so one chatty worker cannot hold
 * the loop; and at most this many chunks are read synchronously when a
 * worker has exited (only a grandchild that inherited its stderr could
 * keep writing). */
#define SUP_CHUNKS_PER_CB 16
#define SUP_DRAIN_CHUNKS 256
#define SUP_MSG_MAX 512
#define SUP_NAME_MAX 64
#define SUP_MAX_RESTARTS_CAP 1000000u
/* Defaults for a zero max_restarts and period. */
#define SUP_DEFAULT_MAX_RESTARTS 5
#define SUP_DEFAULT_PERIOD 5.0
/* Exit code reported when a child's exit status was lost. */
#define SUP_LOST_STATUS 255
#define SUP_START_FAILED 127

typedef enum {
  SLOT_IDLE,    /* nothing runs and nothing is pending */
  SLOT_RUNNING, /* run != NULL and its pidfd is watched */
  SLOT_REAPING, /* the pidfd fired; the exit status is on its way */
  SLOT_BACKOFF, /* a restart waits on the timer */
  SLOT_FAILED   /* a start failed; the timer reports it */
} slot_state_t;

typedef struct sup_run_s sup_run_t;
typedef struct sup_slot_s sup_slot_t;

struct sup_run_s {
  mpx__sup_t *sup;
  sup_slot_t *slot;
  mpx_process_t *proc;
  pid_t pid;
  double t_start;
  int errfd;             /* read end of the stderr pipe, -1 once closed */
  int nhandles;          /* initialised handles whose close cb is pending */
  bool pid_init, err_init, err_eof;
  uv_poll_t pid_poll;
  uv_poll_t err_poll;
  bool line_cut;         /* the current line was cut: drop up to '\n' */
  size_t line_len;
  char line[MPX__SUP_LINE_MAX];
  unsigned tail_head, tail_n;
  size_t tail_len[MPX__SUP_TAIL_LINES];
  char tail[MPX__SUP_TAIL_LINES][MPX__SUP_LINE_MAX];
};

struct sup_slot_s {
  mpx__sup_t *sup;
  unsigned idx;
  slot_state_t state;
  sup_run_t *run;        /* the running (or reaping) worker */
  bool retiring;
  unsigned consecutive;  /* consecutive abnormal exits, for the backoff */
  double reap_delay;     /* next retry while SLOT_REAPING */
  uv_timer_t timer;
  char fail[SUP_MSG_MAX]; /* SLOT_FAILED: why the start failed */
};

struct mpx__sup_s {
  uv_loop_t *loop;
  mpx__sup_opts_t o;     /* o.name points to name */
  char name[SUP_NAME_MAX];
  sup_slot_t *slots;
  unsigned alive;
  unsigned restarts;
  bool started, stopping, broken, freeing;
  bool empty_reported;   /* empty() was called */
  /* Intensity: the times of the last max_restarts + 1 counted restarts. */
  double *times;
  unsigned times_cap, times_n, times_head;
  uv_timer_t stop_timer; /* SIGKILL after the grace of mpx__sup_stop */
  unsigned handles;      /* initialised handles whose close cb is pending */
};

static void slot_start(sup_slot_t *sl);
static void on_slot_timer(uv_timer_t *t);

/* ---- helpers -------------------------------------------------------------- */

static uint64_t to_ms(double seconds) {
  if (!(seconds > 0)) return 0;
  if (seconds > 1e9) seconds = 1e9;
  return (uint64_t)ceil(seconds * 1000.0);
}

/* "killed by signal 11 (SIGSEGV)", "exited with code 3". */
static void describe_code(char *buf, size_t n, int code) {
  if (code < 0) {
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 32)
    const char *abbrev = sigabbrev_np(-code);
    if (abbrev != NULL)
      snprintf(buf, n, "killed by signal %d (SIG%s)", -code, abbrev);
    else
#endif
      snprintf(buf, n, "killed by signal %d", -code);
  } else {
    snprintf(buf, n, "exited with code %d", code);
  }
}

/* mpx_last_error() is only meaningful when the failing call set it: mark it
 * before a call and compare after, so a stale message is never reported. */
typedef struct {
  char text[48];
} err_mark_t;

static void err_mark(err_mark_t *m) {
  mpx__err(MPX_OK, "%s", "");
  snprintf(m->text, sizeof m->text, "%s", mpx_last_error());
}

static void err_since(const err_mark_t *m, int rc, const char *what,
                      char *buf, size_t n) {
  const char *e = mpx_last_error();
  if (strcmp(e, m->text) != 0 && *e != '\0')
    snprintf(buf, n, "%s", e);
  else
    snprintf(buf, n, "%s failed: %s (%s)", what, mpx_strerror(rc),
             mpx_err_name(rc));
}

static void sup_maybe_destroy(mpx__sup_t *s) {
  if (!s->freeing || s->handles != 0) return;
  free(s->times);
  free(s->slots);
  free(s);
}

/* ---- runs: stderr lines --------------------------------------------------- */

static void run_emit_line(sup_run_t *r) {
  mpx__sup_t *s = r->sup;
  unsigned at;

  if (!s->o.quiet) {
    char out[SUP_NAME_MAX + 64 + MPX__SUP_LINE_MAX + 1];
    int h = snprintf(out, SUP_NAME_MAX + 64, "[%s worker %u pid %d] ",
                     s->name, r->slot->idx, (int)r->pid);
    if (h < 0) h = 0;
    if (h > SUP_NAME_MAX + 63) h = SUP_NAME_MAX + 63;
    memcpy(out + h, r->line, r->line_len);
    out[(size_t)h + r->line_len] = '\n';
    /* One write per line, so relayed lines never interleave with other
     * writers of our stderr. A failing stderr is not our business. */
    (void)mpx__write_all(STDERR_FILENO, out, (size_t)h + r->line_len + 1);
  }
  if (r->tail_n < MPX__SUP_TAIL_LINES) {
    at = (r->tail_head + r->tail_n) % MPX__SUP_TAIL_LINES;
    r->tail_n++;
  } else {
    at = r->tail_head;
    r->tail_head = (r->tail_head + 1) % MPX__SUP_TAIL_LINES;
  }
  memcpy(r->tail[at], r->line, r->line_len);
  r->tail_len[at] = r->line_len;
  r->line_len = 0;
}

/* Splits bytes into lines; a line is cut at MPX__SUP_LINE_MAX bytes and
 * the rest of it dropped. */
static void run_feed(sup_run_t *r, const char *p, size_t n) {
  while (n > 0) {
    const char *nl = memchr(p, '\n', n);
    size_t seg = nl ? (size_t)(nl - p) : n;
    if (!r->line_cut) {
      size_t room = MPX__SUP_LINE_MAX - r->line_len;
      size_t take = seg < room ? seg : room;
      memcpy(r->line + r->line_len, p, take);
      r->line_len += take;
      if (take < seg) {
        run_emit_line(r);
        r->line_cut = true;
      }
    }
    if (nl != NULL) {
      if (!r->line_cut) run_emit_line(r);
      r->line_cut = false;
      seg++;
    }
    p += seg;
    n -= seg;
  }
}

static void run_stop_stderr(sup_run_t *r) {
  r->err_eof = true;
  if (r->err_init && uv_is_active((uv_handle_t *)&r->err_poll))
    uv_poll_stop(&r->err_poll);
}

/* Reads what the pipe holds, at most max_chunks chunks; stops at EOF (and
 * then stops watching the pipe). */
static void run_read_stderr(sup_run_t *r, unsigned max_chunks) {
  char buf[SUP_CHUNK];
  while (max_chunks > 0 && !r->err_eof && r->errfd >= 0) {
    ssize_t k = read(r->errfd, buf, sizeof buf);
    if (k > 0) {
      run_feed(r, buf, (size_t)k);
      max_chunks--;
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (k < 0)
      MPX__WARN("%s: reading the stderr of worker %u (pid %d): %s",
                r->sup->name, r->slot->idx, (int)r->pid, strerror(errno));
    run_stop_stderr(r);
  }
}

static void on_stderr(uv_poll_t *h, int status, int events) {
  sup_run_t *r = h->data;
  (void)events;
  if (status < 0) {
    MPX__WARN("%s: watching the stderr of worker %u (pid %d): %s",
              r->sup->name, r->slot->idx, (int)r->pid, uv_strerror(status));
    run_stop_stderr(r);
    return;
  }
  run_read_stderr(r, SUP_CHUNKS_PER_CB);
}

/* The kept lines joined by '\n'; buf holds MPX__SUP_TAIL_LINES lines. */
static void run_tail(const sup_run_t *r, char *buf, size_t n) {
  size_t len = 0;
  unsigned i;
  for (i = 0; i < r->tail_n; i++) {
    unsigned at = (r->tail_head + i) % MPX__SUP_TAIL_LINES;
    if (i > 0 && len + 1 < n) buf[len++] = '\n';
    if (len + r->tail_len[at] >= n) break;
    memcpy(buf + len, r->tail[at], r->tail_len[at]);
    len += r->tail_len[at];
  }
  buf[len] = '\0';
}

static void run_last_line(const sup_run_t *r, char *buf, size_t n) {
  unsigned at;
  size_t len;
  buf[0] = '\0';
  if (r->tail_n == 0) return;
  at = (r->tail_head + r->tail_n - 1) % MPX__SUP_TAIL_LINES;
  len = r->tail_len[at] < n - 1 ? r->tail_len[at] : n - 1;
  memcpy(buf, r->tail[at], len);
  buf[len] = '\0';
}

/* ---- runs: life cycle ---------------------------------------------------- */

static void run_destroy(sup_run_t *r) {
  if (r->errfd >= 0) close(r->errfd);
  /* Exited and reaped (or killed and joined by mpx__sup_free); a child
   * that still runs is detached and reaped later by the process API. */
  mpx_process_free(r->proc);
  free(r);
}

static void on_run_handle_closed(uv_handle_t *h) {
  sup_run_t *r = h->data;
  mpx__sup_t *s = r->sup;
  s->handles--;
  if (--r->nhandles == 0) run_destroy(r);
  sup_maybe_destroy(s);
}

static void run_close(sup_run_t *r) {
  if (r->nhandles == 0) {
    run_destroy(r);
    return;
  }
  if (r->pid_init) uv_close((uv_handle_t *)&r->pid_poll, on_run_handle_closed);
  if (r->err_init) uv_close((uv_handle_t *)&r->err_poll, on_run_handle_closed);
}

/* ---- policy ---------------------------------------------------------------- */

static void stop_done_check(mpx__sup_t *s) {
  if (s->alive == 0 && uv_is_active((uv_handle_t *)&s->stop_timer))
    uv_timer_stop(&s->stop_timer);
}

/* Records a restart; true when it is one too many in the period. */
static bool intensity_exceeded(mpx__sup_t *s, unsigned *count) {
  double now = mpx__now();
  if (s->o.max_restarts == MPX__SUP_UNLIMITED) return false;
  s->times[s->times_head] = now;
  s->times_head = (s->times_head + 1) % s->times_cap;
  if (s->times_n < s->times_cap) s->times_n++;
  /* Full ring: times_head is now the oldest of the last cap restarts. */
  if (s->times_n == s->times_cap &&
      now - s->times[s->times_head] <= s->o.period) {
    *count = s->times_cap;
    return true;
  }
  return false;
}

typedef struct {
  pid_t pid;
  int code;
  const char *fail;      /* the start failed: why */
  const char *last_line; /* "" if none */
} sup_exit_t;

static void describe_exit(unsigned idx, const sup_exit_t *e, char *buf,
                          size_t n) {
  char what[64];
  if (e->fail != NULL) {
    snprintf(buf, n, "worker %u could not start: %s", idx, e->fail);
    return;
  }
  describe_code(what, sizeof what, e->code);
  if (e->last_line[0] != '\0')
    snprintf(buf, n, "worker %u (pid %d) %s; stderr: %s", idx, (int)e->pid,
             what, e->last_line);
  else
    snprintf(buf, n, "worker %u (pid %d) %s", idx, (int)e->pid, what);
}

static void sup_break(mpx__sup_t *s, sup_slot_t *sl, const sup_exit_t *e,
                      unsigned count) {
  char last[SUP_MSG_MAX + MPX__SUP_LINE_MAX + 64];
  char why[sizeof last + SUP_NAME_MAX + 96];
  unsigned i;

  describe_exit(sl->idx, e, last, sizeof last);
  snprintf(why, sizeof why, "%s: %u restarts in %.1f s (limit %u); last: %s",
           s->name, count, s->o.period, s->o.max_restarts, last);
  s->broken = true;
  for (i = 0; i < s->o.n; i++) {
    sup_slot_t *o = &s->slots[i];
    if (o->state == SLOT_BACKOFF) {
      uv_timer_stop(&o->timer);
      o->state = SLOT_IDLE;
    }
    if (o->run != NULL) (void)mpx_process_kill(o->run->proc);
  }
  MPX__INFO("%s", why);
  if (s->o.broken != NULL) s->o.broken(s->o.arg, why);
}

static const char *policy_name(mpx__restart_t r) {
  switch (r) {
  case MPX__RESTART_PERMANENT: return "permanent";
  case MPX__RESTART_TRANSIENT: return "transient";
  default: return "temporary";
  }
}

/* sl's worker ended and will not be restarted: when no other slot runs a
 * worker or will start one, nothing ever will again. */
static void check_empty(mpx__sup_t *s, sup_slot_t *sl, const sup_exit_t *e) {
  char last[SUP_MSG_MAX + MPX__SUP_LINE_MAX + 64];
  char why[sizeof last + SUP_NAME_MAX + 96];
  unsigned i;
  if (s->empty_reported) return;
  for (i = 0; i < s->o.n; i++)
    if (s->slots[i].state != SLOT_IDLE) return;
  s->empty_reported = true;
  describe_exit(sl->idx, e, last, sizeof last);
  snprintf(why, sizeof why, "%s: no worker left: %s; restart policy %s",
           s->name, last, policy_name(s->o.restart));
  MPX__INFO("%s", why);
  if (s->o.empty != NULL) s->o.empty(s->o.arg, why);
}

static double backoff_delay(const mpx__sup_t *s, unsigned k) {
  double d = s->o.backoff_min;
  while (k-- > 1 && d < s->o.backoff_max) d *= 2;
  return d < s->o.backoff_max ? d : s->o.backoff_max;
}

/* After exited(): restart the slot or not. */
static void slot_decide(sup_slot_t *sl, const sup_exit_t *e,
                        double lifetime) {
  mpx__sup_t *s = sl->sup;
  bool retire = sl->retiring, abnormal = e->code != 0, restart;
  unsigned count;
  double delay = 0;

  sl->retiring = false;
  if (s->stopping || s->broken || s->freeing) return;
  if (retire && !abnormal) {
    sl->consecutive = 0;
    slot_start(sl);
    return;
  }
  switch (s->o.restart) {
  case MPX__RESTART_PERMANENT: restart = true; break;
  case MPX__RESTART_TRANSIENT: restart = abnormal; break;
  default: restart = false; break;
  }
  if (!restart) {
    check_empty(s, sl, e);
    return;
  }
  if (intensity_exceeded(s, &count)) {
    sup_break(s, sl, e, count);
    return;
  }
  s->restarts++;
  if (abnormal) {
    if (lifetime > s->o.backoff_max) sl->consecutive = 0;
    sl->consecutive++;
    delay = backoff_delay(s, sl->consecutive);
  } else {
    sl->consecutive = 0;
  }
  MPX__DEBUG("%s: restarting worker %u in %.3f s", s->name, sl->idx, delay);
  /* After a failed start, always through the loop: a start that keeps
   * failing must not recurse. */
  if (delay > 0 || e->fail != NULL) {
    sl->state = SLOT_BACKOFF;
    uv_timer_start(&sl->timer, on_slot_timer, to_ms(delay), 0);
  } else {
    slot_start(sl);
  }
}

/* The worker of sl has exited with `code`: read the rest of its stderr,
 * report it, release the run, decide. */
static void slot_exited(sup_slot_t *sl, int code) {
  mpx__sup_t *s = sl->sup;
  sup_run_t *r = sl->run;
  char tail[MPX__SUP_TAIL_LINES * (MPX__SUP_LINE_MAX + 1) + 1];
  char last[MPX__SUP_LINE_MAX + 1];
  sup_exit_t e;
  double lifetime;

  /* The child is gone: everything it wrote is in the pipe already. */
  run_read_stderr(r, SUP_DRAIN_CHUNKS);
  if (r->line_len > 0) run_emit_line(r);
  run_stop_stderr(r);
  run_tail(r, tail, sizeof tail);
  run_last_line(r, last, sizeof last);

  e.pid = r->pid;
  e.code = code;
  e.fail = NULL;
  e.last_line = last;
  lifetime = mpx__now() - r->t_start;
  sl->run = NULL;
  sl->state = SLOT_IDLE;
  s->alive--;
  run_close(r);
  stop_done_check(s);
  MPX__DEBUG("%s: worker %u (pid %d) ended with %d", s->name, sl->idx,
             (int)e.pid, code);
  if (s->o.exited != NULL) s->o.exited(s->o.arg, sl->idx, e.pid, code, tail);
  slot_decide(sl, &e, lifetime);
}

static void slot_try_reap(sup_slot_t *sl) {
  sup_run_t *r = sl->run;
  int rc, code;

  rc = mpx_process_join(r->proc, 0);
  if (rc == MPX_ETIMEDOUT) {
    /* A forkserver child: the server reaps it and sends its status, which
     * may lag the pidfd a little. Ask again shortly. */
    uint64_t ms = to_ms(sl->reap_delay);
    sl->reap_delay = sl->reap_delay * 2 < 0.1 ? sl->reap_delay * 2 : 0.1;
    uv_timer_start(&sl->timer, on_slot_timer, ms, 0);
    return;
  }
  if (rc != 0 || mpx_process_exitcode(r->proc, &code) != 0) {
    MPX__WARN("%s: worker %u (pid %d): %s", sl->sup->name, sl->idx,
              (int)r->pid, mpx_last_error());
    code = SUP_LOST_STATUS;
  }
  slot_exited(sl, code);
}

static void on_pidfd(uv_poll_t *h, int status, int events) {
  sup_run_t *r = h->data;
  sup_slot_t *sl = r->slot;
  (void)status; /* an error, too, is worth a look at the process */
  (void)events;
  uv_poll_stop(h); /* the pidfd stays readable */
  if (sl->state != SLOT_RUNNING) return;
  sl->state = SLOT_REAPING;
  sl->reap_delay = 0.001;
  slot_try_reap(sl);
}

static void on_slot_timer(uv_timer_t *t) {
  sup_slot_t *sl = t->data;
  switch (sl->state) {
  case SLOT_BACKOFF:
    sl->state = SLOT_IDLE;
    slot_start(sl);
    break;
  case SLOT_REAPING:
    slot_try_reap(sl);
    break;
  case SLOT_FAILED: {
    mpx__sup_t *s = sl->sup;
    char fail[SUP_MSG_MAX];
    sup_exit_t e;
    snprintf(fail, sizeof fail, "%s", sl->fail);
    e.pid = 0;
    e.code = SUP_START_FAILED;
    e.fail = fail;
    e.last_line = "";
    sl->state = SLOT_IDLE;
    if (s->o.exited != NULL)
      s->o.exited(s->o.arg, sl->idx, 0, SUP_START_FAILED, fail);
    slot_decide(sl, &e, 0);
    break;
  }
  default:
    break;
  }
}

/* ---- starting a slot ------------------------------------------------------ */

/* uv_poll_init makes the pidfd non-blocking: never join the process with
 * a negative timeout after this (a blocking waitid on a non-blocking pidfd
 * fails with EAGAIN); join(p, 0) and join(p, 5) poll, and are fine. */
static int run_watch(mpx__sup_t *s, sup_run_t *r) {
  /* A child of a forkserver or zygote: its status pipe turns readable when
   * the server has reaped it and sent the status (or died), which is when
   * a join can tell; its pidfd would fire first and have us poll for it. */
  int fd = mpx__process_status_fd(r->proc);
  int rc = uv_poll_init(s->loop, &r->pid_poll,
                        fd >= 0 ? fd : mpx_process_sentinel(r->proc));
  if (rc) return rc;
  r->pid_poll.data = r;
  r->pid_init = true;
  r->nhandles++;
  s->handles++;
  rc = uv_poll_init(s->loop, &r->err_poll, r->errfd);
  if (rc) return rc;
  r->err_poll.data = r;
  r->err_init = true;
  r->nhandles++;
  s->handles++;
  rc = uv_poll_start(&r->pid_poll, UV_READABLE, on_pidfd);
  if (rc == 0) rc = uv_poll_start(&r->err_poll, UV_READABLE, on_stderr);
  return rc;
}

/* slot_start(), first step: a run with its stderr pipe (the read end in
 * r->errfd, the write end, for the child, in *wfd). NULL with sl->fail
 * set on failure. */
static sup_run_t *run_new(sup_slot_t *sl, int *wfd) {
  int pfd[2];
  sup_run_t *r = calloc(1, sizeof *r);
  if (r == NULL) {
    snprintf(sl->fail, sizeof sl->fail, "out of memory");
    return NULL;
  }
  r->sup = sl->sup;
  r->slot = sl;
  r->errfd = -1;
  if (pipe2(pfd, O_CLOEXEC) != 0) {
    snprintf(sl->fail, sizeof sl->fail, "cannot create a stderr pipe: %s",
             strerror(errno));
    run_close(r);
    return NULL;
  }
  r->errfd = pfd[0];
  *wfd = pfd[1];
  return r;
}

/* slot_start(), second step: the owner prepares the process (prepare),
 * which starts with the stderr pipe's write end `wfd` passed after the
 * owner's descriptors. The write end is closed here, started or not.
 * Non-zero with sl->fail set on failure. */
static int run_spawn(mpx__sup_t *s, sup_slot_t *sl, sup_run_t *r, int wfd) {
  mpx__sup_start_t st;
  mpx_process_opts_t po;
  int fds[SUP_MAX_PASS_FDS + 1];
  char pname[SUP_NAME_MAX + 32];
  err_mark_t mark;
  int rc;

  memset(&st, 0, sizeof st);
  st.stderr_fd = wfd;
  err_mark(&mark);
  rc = s->o.prepare(s->o.arg, sl->idx, &st);
  if (rc != 0) {
    err_since(&mark, rc, "prepare", sl->fail, sizeof sl->fail);
    close(wfd);
    return rc;
  }
  po = st.opts;
  if (po.n_pass_fds > SUP_MAX_PASS_FDS) {
    snprintf(sl->fail, sizeof sl->fail,
             "prepare passed %zu descriptors (at most %d)", po.n_pass_fds,
             SUP_MAX_PASS_FDS);
    if (st.release != NULL) st.release(s->o.arg, sl->idx);
    close(wfd);
    return MPX_EINVAL;
  }
  if (po.n_pass_fds > 0)
    memcpy(fds, po.pass_fds, po.n_pass_fds * sizeof fds[0]);
  fds[po.n_pass_fds] = wfd;
  po.pass_fds = fds;
  po.n_pass_fds++;
  if (po.name == NULL) {
    snprintf(pname, sizeof pname, "%s-worker-%u", s->name, sl->idx);
    po.name = pname;
  }
  err_mark(&mark);
  rc = mpx_process_new(&r->proc, &po);
  if (rc == 0)
    rc = st.zygote != NULL ? mpx__process_start_zygote(r->proc, st.zygote)
                           : mpx_process_start(r->proc);
  if (rc != 0) err_since(&mark, rc, "start", sl->fail, sizeof sl->fail);
  if (st.release != NULL) st.release(s->o.arg, sl->idx);
  close(wfd);
  return rc;
}

static void slot_start(sup_slot_t *sl) {
  mpx__sup_t *s = sl->sup;
  int wfd = -1;
  sup_run_t *r = run_new(sl, &wfd);
  if (r == NULL) goto failed;
  if (run_spawn(s, sl, r, wfd) != 0) goto failed;

  r->pid = mpx_process_pid(r->proc);
  r->t_start = mpx__now();
  int rc = run_watch(s, r);
  if (rc != 0) {
    snprintf(sl->fail, sizeof sl->fail, "cannot watch pid %d: %s",
             (int)r->pid, uv_strerror(rc));
    (void)mpx_process_kill(r->proc);
    (void)mpx_process_join(r->proc, 5);
    goto failed;
  }
  sl->run = r;
  sl->state = SLOT_RUNNING;
  s->alive++;
  MPX__DEBUG("%s: worker %u started, pid %d", s->name, sl->idx, (int)r->pid);
  if (s->o.started != NULL) s->o.started(s->o.arg, sl->idx, r->pid);
  return;

failed:
  if (r != NULL) run_close(r);
  MPX__DEBUG("%s: worker %u: %s", s->name, sl->idx, sl->fail);
  /* Reported from the loop, as an exit with code 127. */
  sl->state = SLOT_FAILED;
  uv_timer_start(&sl->timer, on_slot_timer, 0, 0);
}

/* ---- API ------------------------------------------------------------------ */

static void on_stop_timer(uv_timer_t *t) {
  mpx__sup_t *s = t->data;
  unsigned i;
  for (i = 0; i < s->o.n; i++)
    if (s->slots[i].run != NULL) (void)mpx_process_kill(s->slots[i].run->proc);
}

int mpx__sup_new(mpx__sup_t **out, uv_loop_t *loop, const mpx__sup_opts_t *o) {
  mpx__sup_t *s;
  unsigned i;

  *out = NULL;
  if (o == NULL || loop == NULL || o->n == 0 || o->prepare == NULL)
    return mpx__err(MPX_EINVAL, "supervisor: needs a loop, n > 0 and prepare");
  if (isnan(o->period) || !(o->backoff_min >= 0) || !(o->backoff_max >= 0))
    return mpx__err(MPX_EINVAL, "supervisor: bad period or backoff");
  if (o->restart != MPX__RESTART_PERMANENT &&
      o->restart != MPX__RESTART_TRANSIENT &&
      o->restart != MPX__RESTART_TEMPORARY)
    return mpx__err(MPX_EINVAL, "supervisor: unknown restart policy %d",
                    (int)o->restart);
  if (o->max_restarts > SUP_MAX_RESTARTS_CAP &&
      o->max_restarts != MPX__SUP_UNLIMITED)
    return mpx__err(MPX_EINVAL, "supervisor: max_restarts %u is above %u",
                    o->max_restarts, SUP_MAX_RESTARTS_CAP);

  s = calloc(1, sizeof *s);
  if (s == NULL) return MPX_ENOMEM;
  s->loop = loop;
  s->o = *o;
  snprintf(s->name, sizeof s->name, "%s", o->name ? o->name : "sup");
  s->o.name = s->name;
  if (s->o.max_restarts == 0 && s->o.period == 0) {
    s->o.max_restarts = SUP_DEFAULT_MAX_RESTARTS;
    s->o.period = SUP_DEFAULT_PERIOD;
  } else if (s->o.period <= 0) {
    s->o.period = SUP_DEFAULT_PERIOD;
  }
  if (s->o.backoff_max < s->o.backoff_min) s->o.backoff_max = s->o.backoff_min;
  s->times_cap = s->o.max_restarts == MPX__SUP_UNLIMITED
                     ? 1 : s->o.max_restarts + 1;
  s->times = calloc(s->times_cap, sizeof *s->times);
  s->slots = calloc(o->n, sizeof *s->slots);
  if (s->times == NULL || s->slots == NULL) {
    free(s->times);
    free(s->slots);
    free(s);
    return MPX_ENOMEM;
  }
  for (i = 0; i < o->n; i++) {
    sup_slot_t *sl = &s->slots[i];
    sl->sup = s;
    sl->idx = i;
    uv_timer_init(loop, &sl->timer);
    sl->timer.data = sl;
    s->handles++;
  }
  uv_timer_init(loop, &s->stop_timer);
  s->stop_timer.data = s;
  s->handles++;
  *out = s;
  return 0;
}

int mpx__sup_start(mpx__sup_t *s) {
  unsigned i;
  if (s->started || s->stopping || s->freeing)
    return mpx__err(MPX_ESTATE, "%s: already started or stopped", s->name);
  s->started = true;
  for (i = 0; i < s->o.n; i++) {
    /* A started() callback may have stopped us. */
    if (s->stopping || s->broken) break;
    slot_start(&s->slots[i]);
  }
  return 0;
}

int mpx__sup_kill(mpx__sup_t *s, unsigned idx, int sig) {
  if (idx >= s->o.n)
    return mpx__err(MPX_EINVAL, "%s: no worker slot %u", s->name, idx);
  if (s->slots[idx].run == NULL) return 0;
  return mpx_process_signal(s->slots[idx].run->proc, sig);
}

void mpx__sup_retire(mpx__sup_t *s, unsigned idx) {
  if (idx < s->o.n && s->slots[idx].run != NULL) s->slots[idx].retiring = true;
}

void mpx__sup_stop(mpx__sup_t *s, double grace) {
  unsigned i;
  if (s->freeing) return;
  s->stopping = true;
  for (i = 0; i < s->o.n; i++) {
    sup_slot_t *sl = &s->slots[i];
    if (sl->state == SLOT_BACKOFF) {
      uv_timer_stop(&sl->timer);
      sl->state = SLOT_IDLE;
    }
    if (sl->state == SLOT_RUNNING) (void)mpx_process_terminate(sl->run->proc);
  }
  if (s->alive > 0 && grace >= 0)
    uv_timer_start(&s->stop_timer, on_stop_timer, to_ms(grace), 0);
}

unsigned mpx__sup_alive(const mpx__sup_t *s) { return s->alive; }
bool mpx__sup_broken(const mpx__sup_t *s) { return s->broken; }
unsigned mpx__sup_restarts(const mpx__sup_t *s) { return s->restarts; }

pid_t mpx__sup_pid(const mpx__sup_t *s, unsigned idx) {
  if (idx >= s->o.n || s->slots[idx].run == NULL) return 0;
  return s->slots[idx].run->pid;
}

static void on_sup_handle_closed(uv_handle_t *h) {
  mpx__sup_t *s = h->data;
  s->handles--;
  sup_maybe_destroy(s);
}

static void on_slot_timer_closed(uv_handle_t *h) {
  sup_slot_t *sl = h->data;
  mpx__sup_t *s = sl->sup;
  s->handles--;
  sup_maybe_destroy(s);
}

void mpx__sup_free(mpx__sup_t *s) {
  unsigned i;
  if (s == NULL || s->freeing) return;
  s->freeing = true;
  /* Kill them all first, so they die together, then reap each. */
  for (i = 0; i < s->o.n; i++)
    if (s->slots[i].run != NULL) (void)mpx_process_kill(s->slots[i].run->proc);
  for (i = 0; i < s->o.n; i++) {
    sup_slot_t *sl = &s->slots[i];
    sup_run_t *r = sl->run;
    if (r != NULL) {
      if (mpx_process_join(r->proc, 5) != 0)
        MPX__WARN("%s: worker %u (pid %d) did not die: %s", s->name, i,
                  (int)r->pid, mpx_last_error());
      sl->run = NULL;
      s->alive--;
      run_close(r);
    }
    sl->state = SLOT_IDLE;
    uv_close((uv_handle_t *)&sl->timer, on_slot_timer_closed);
  }
  uv_close((uv_handle_t *)&s->stop_timer, on_sup_handle_closed);
}

void mpx__sup_worker_init(int fd) {
  if (fd < 0) return;
  if (fd != STDERR_FILENO) {
    dup2(fd, STDERR_FILENO);
    close(fd);
  }
  setvbuf(stderr, NULL, _IOLBF, 0);
}
