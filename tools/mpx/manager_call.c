/* `mpx manager call`: one method call on a manager's object (or on the
 * server itself) from the command line, with arguments and the result in
 * JSON (the json codec's tagged form for tuples, bytes, big ints). */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpx.h>

#include "manager_cli.h"

enum { EXIT_DONE = 0, EXIT_USAGE = 2, EXIT_RUNTIME = 3 };

static const char usage_text[] =
    "usage: mpx manager call --connect ADDRESS --authkey-file FILE\n"
    "                        [--codec pickle|msgpack] [--timeout SECONDS]\n"
    "                        [--kw NAME=JSON ...] TYPEID METHOD [ARG ...]\n"
    "       mpx manager call --connect ADDRESS --authkey-file FILE --server\n"
    "                        METHOD [ARG ...]\n"
    "\n"
    "Calls METHOD on an object of a manager server (mpx's or Python's\n"
    "multiprocessing.managers) and prints the result as one line of JSON.\n"
    "TYPEID is what the server registered: a published name (get_queue)\n"
    "gives its one object, a type (dict, Queue) a new one. Each ARG is a\n"
    "JSON value; tuples, bytes and big ints use the json codec's tags\n"
    "({\"$tuple\": [...]}, {\"$bytes\": \"base64\"}, ...). With --server, METHOD\n"
    "is a server call: number_of_objects, debug_info, shutdown, ...\n"
    "\n"
    "  mpx manager call --connect tcp://127.0.0.1:50000 --authkey-file key \\\n"
    "      get_queue put '{\"a\": 1}'\n"
    "  mpx manager call --connect tcp://127.0.0.1:50000 --authkey-file key \\\n"
    "      get_queue get true 5\n"
    "\n"
    "  --connect ADDRESS      tcp://HOST:PORT, unix:PATH or unix:@NAME\n"
    "  --authkey-file FILE    the authkey: the file's bytes exactly (no\n"
    "                         newline is stripped)\n"
    "  --codec NAME           pickle (default) or msgpack (mpx servers only)\n"
    "  --timeout SECONDS      connect and call limit beyond the time the\n"
    "                         method itself may block (default: none)\n"
    "  --kw NAME=JSON         a keyword argument (repeatable)\n"
    "  --server               call the server, not an object\n"
    "\n"
    "--opt=VALUE and --opt VALUE are the same. Options come before TYPEID\n"
    "(or METHOD with --server): every argument from there on is a JSON ARG,\n"
    "-5 and --kw=x included. -- ends the options.\n"
    "\n"
    "exit codes: 0 done, 2 usage error, 3 failure (connection, auth, or the\n"
    "method raised: its exception is printed on stderr)\n";

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "mpx manager call: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n(mpx manager call --help for usage)\n");
  return EXIT_USAGE;
}

/* The key file's bytes, exactly. 0 or -errno. */
static int read_key(const char *path, char **key, size_t *len) {
  FILE *f = fopen(path, "rb");
  size_t cap = 256, n = 0, r;
  char *buf;
  if (f == NULL) return -errno;
  buf = malloc(cap);
  while (buf != NULL && (r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      char *nb = cap >= (1u << 20) ? NULL : realloc(buf, cap * 2);
      if (nb == NULL) break; /* a key of a megabyte is enough */
      buf = nb;
      cap *= 2;
    }
  }
  if (buf == NULL || ferror(f)) {
    int err = buf == NULL ? -ENOMEM : -EIO;
    fclose(f);
    free(buf);
    return err;
  }
  fclose(f);
  *key = buf;
  *len = n;
  return 0;
}

/* Prints o as JSON on f with a newline. */
static int print_json(FILE *f, const mpx_codec_t *json, const mpx_obj_t *o) {
  mpx_wbuf_t w;
  int rc;
  mpx_wbuf_init(&w);
  rc = mpx_codec_encode(json, o, &w, NULL);
  if (rc == 0) fprintf(f, "%.*s\n", (int)w.len, (const char *)w.data);
  mpx_wbuf_free(&w);
  return rc;
}

/* What the command line asks for, and what the call holds. */
typedef struct {
  const char *connect, *keyfile;
  mpx_mclient_opts_t o;
  bool server;
  const mpx_codec_t *json;
  mpx_obj_t *args, *kwds, *result;
  char **pos; /* TYPEID METHOD ARG... (METHOD ARG... with --server) */
  int npos;
  mpx_mclient_t *c;
  mpx_proxy_t *p, *pres;
} call_t;

enum { OPT_CONNECT = 256, OPT_AUTHKEY_FILE, OPT_CODEC, OPT_TIMEOUT, OPT_KW, OPT_SERVER };

static const struct option call_opts[] = {
    {"help", no_argument, NULL, 'h'},
    {"connect", required_argument, NULL, OPT_CONNECT},
    {"authkey-file", required_argument, NULL, OPT_AUTHKEY_FILE},
    {"codec", required_argument, NULL, OPT_CODEC},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"kw", required_argument, NULL, OPT_KW},
    {"server", no_argument, NULL, OPT_SERVER},
    {NULL, 0, NULL, 0}};

/* --kw NAME=JSON into c->kwds: 0, or 2 after a message. */
static int take_kw(call_t *c, const char *v) {
  const char *eq = strchr(v, '=');
  mpx_obj_t *val = NULL;
  if (eq == NULL || eq == v) return usage_error("--kw '%s': expected NAME=JSON", v);
  if (mpx_codec_decode(c->json, eq + 1, strlen(eq + 1), NULL, &val) != 0) {
    fprintf(stderr, "mpx manager call: --kw '%s': %s\n", v, mpx_last_error());
    return EXIT_USAGE;
  }
  mpx_obj_map_set(c->kwds, mpx_obj_str(v, (size_t)(eq - v)), val);
  return 0;
}

/* One option getopt_long returned, into c: 0, or 2 after a message. */
static int take_opt(call_t *c, int opt, const char *v) {
  char *end;
  switch (opt) {
  case OPT_CONNECT: c->connect = v; break;
  case OPT_AUTHKEY_FILE: c->keyfile = v; break;
  case OPT_SERVER: c->server = true; break;
  case OPT_KW: return take_kw(c, v);
  case OPT_CODEC:
    if (strcmp(v, "pickle") != 0 && strcmp(v, "msgpack") != 0)
      return usage_error("--codec '%s': pickle or msgpack", v);
    c->o.codec = v;
    break;
  case OPT_TIMEOUT:
    c->o.timeout = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || !(c->o.timeout >= 0))
      return usage_error("--timeout '%s': a number of seconds", v);
    break;
  }
  return 0;
}

/* A negative number where an option could be: the first operand, as
 * getopt would take it for an option ("+": it stops at operands only). */
static bool negative_number(const char *a) {
  return a[0] == '-' && isdigit((unsigned char)a[1]);
}

/* argv (argv[0] the command's name) into c: 0, -1 after --help, or 2
 * after a message. Options stop at the first operand ("+"), so the
 * method's arguments are never read as options. */
static int parse_args(int argc, char **argv, call_t *c) {
  int opt, rc;
  optind = 0; /* a fresh scan (GNU: 0 also resets its state) */
  opterr = 0;
  while (!(optind < argc && negative_number(argv[optind > 0 ? optind : 1])) &&
         (opt = getopt_long(argc, argv, "+:h", call_opts, NULL)) != -1) {
    if (opt == 'h') {
      fputs(usage_text, stdout);
      return -1;
    }
    if (opt == '?' || opt == ':') return mpx_cli_opt_error("call", opt, argc, argv, call_opts);
    if ((rc = take_opt(c, opt, optarg)) != 0) return rc;
  }
  c->pos = argv + optind;
  c->npos = argc - optind;
  if (c->connect == NULL || c->keyfile == NULL)
    return usage_error("%s", "--connect and --authkey-file are required");
  if (c->npos < (c->server ? 1 : 2))
    return usage_error("%s", c->server ? "expected METHOD [ARG ...]"
                                       : "expected TYPEID METHOD [ARG ...]");
  for (int i = c->server ? 1 : 2; i < c->npos; i++) {
    mpx_obj_t *v = NULL;
    if (mpx_codec_decode(c->json, c->pos[i], strlen(c->pos[i]), NULL, &v) != 0) {
      fprintf(stderr, "mpx manager call: argument '%s' is no JSON: %s\n", c->pos[i],
              mpx_last_error());
      return EXIT_USAGE;
    }
    mpx_obj_append(c->args, v);
  }
  return 0;
}

/* Connects and makes the call, its result in c->result (or c->pres): 0,
 * or the exit code after a message. */
static int make_call(call_t *c) {
  char *key = NULL;
  size_t keylen = 0;
  int rc = read_key(c->keyfile, &key, &keylen);
  if (rc != 0) {
    fprintf(stderr, "mpx manager call: --authkey-file '%s': %s\n", c->keyfile, strerror(-rc));
    return EXIT_USAGE;
  }
  rc = mpx_mclient_connect(&c->c, c->connect, key, keylen, &c->o);
  free(key);
  if (rc != 0) {
    fprintf(stderr, "mpx manager call: connect %s: %s\n", c->connect, mpx_last_error());
    return EXIT_RUNTIME;
  }
  if (c->server) {
    if (mpx_obj_len(c->kwds) > 0)
      return usage_error("%s", "--kw is for object calls, not --server");
    rc = mpx_mclient_server_call(c->c, c->pos[0], c->args, &c->result);
  } else {
    if (mpx_mclient_create(c->c, &c->p, c->pos[0], NULL, NULL) != 0) {
      fprintf(stderr, "mpx manager call: create %s: %s\n", c->pos[0], mpx_last_error());
      return EXIT_RUNTIME;
    }
    rc = mpx_proxy_call(c->p, c->pos[1], c->args, c->kwds, &c->result, &c->pres);
  }
  if (rc == MPX_EREMOTE)
    fprintf(stderr, "mpx manager call: %s\n", mpx_last_error());
  else if (rc != 0)
    fprintf(stderr, "mpx manager call: %s: %s\n", c->pos[c->server ? 0 : 1], mpx_last_error());
  return rc == 0 ? EXIT_DONE : EXIT_RUNTIME;
}

/* The result as one line of JSON on stdout; a #PROXY reply as the new
 * object's name (it goes when we exit). 0, or 3 after a message. */
static int print_result(call_t *c) {
  if (c->pres != NULL) {
    mpx_obj_t *m = mpx_obj_map(2);
    mpx_obj_map_set_str(m, "typeid", mpx_obj_str(mpx_proxy_typeid(c->pres), SIZE_MAX));
    mpx_obj_map_set_str(m, "id", mpx_obj_str(mpx_proxy_ident(c->pres), SIZE_MAX));
    c->result = mpx_obj_map(1);
    mpx_obj_map_set_str(c->result, "proxy", m);
  }
  if (print_json(stdout, c->json, c->result) != 0) {
    fprintf(stderr, "mpx manager call: the result has no JSON form: %s\n", mpx_last_error());
    return EXIT_RUNTIME;
  }
  return EXIT_DONE;
}

int mpx_cli_manager_call(int argc, char **argv) {
  call_t c = {0};
  char **av = mpx_cli_named_argv("mpx manager call", argc, argv);
  int ret = EXIT_RUNTIME;
  if (av == NULL) return EXIT_RUNTIME;
  if (mpx_codec_load(&c.json, "json") != 0)
    fprintf(stderr, "mpx manager call: %s\n", mpx_last_error());
  else if ((c.args = mpx_obj_tuple(0)) != NULL && (c.kwds = mpx_obj_map(0)) != NULL)
    ret = parse_args(argc + 1, av, &c);
  if (ret == EXIT_DONE) ret = make_call(&c);
  if (ret == EXIT_DONE) ret = print_result(&c);
  mpx_obj_release(c.result);
  mpx_obj_release(c.args);
  mpx_obj_release(c.kwds);
  mpx_proxy_free(c.pres);
  mpx_proxy_free(c.p);
  mpx_mclient_free(c.c);
  free(av);
  if (ret < 0) ret = EXIT_DONE; /* --help */
  if (fflush(stdout) != 0 && ret == EXIT_DONE) ret = EXIT_RUNTIME;
  return ret;
}
