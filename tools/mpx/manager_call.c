/* `mpx manager call`: one method call on a manager's object (or on the
 * server itself) from the command line, with arguments and the result in
 * JSON (the json codec's tagged form for tuples, bytes, big ints). */
#include <errno.h>
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

int mpx_cli_manager_call(int argc, char **argv) {
  const char *connect = NULL, *keyfile = NULL;
  mpx_mclient_opts_t o = {0};
  const mpx_codec_t *json;
  mpx_obj_t *args = NULL, *kwds = NULL, *result = NULL;
  mpx_mclient_t *c = NULL;
  mpx_proxy_t *p = NULL, *pres = NULL;
  char *key = NULL;
  size_t keylen = 0;
  bool server = false;
  int rc, ret = EXIT_USAGE, npos = 0;
  const char **pos = calloc((size_t)argc + 1, sizeof *pos);

  if (pos == NULL) return EXIT_RUNTIME;
  if ((rc = mpx_codec_load(&json, "json")) != 0) {
    fprintf(stderr, "mpx manager call: %s\n", mpx_last_error());
    free(pos);
    return EXIT_RUNTIME;
  }
  if ((args = mpx_obj_tuple(0)) == NULL || (kwds = mpx_obj_map(0)) == NULL) {
    ret = EXIT_RUNTIME;
    goto out;
  }
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (npos > 0 || a[0] != '-' || strcmp(a, "-") == 0 ||
        (a[1] >= '0' && a[1] <= '9')) {
      pos[npos++] = a; /* positionals, JSON negatives included */
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage_text, stdout);
      ret = EXIT_DONE;
      goto out;
    }
    if (strcmp(a, "--server") == 0) {
      server = true;
      continue;
    }
    if (strcmp(a, "--connect") != 0 && strcmp(a, "--authkey-file") != 0 &&
        strcmp(a, "--codec") != 0 && strcmp(a, "--timeout") != 0 &&
        strcmp(a, "--kw") != 0) {
      ret = usage_error("unknown option '%s'", a);
      goto out;
    }
    if (next == NULL) {
      ret = usage_error("%s needs a value", a);
      goto out;
    }
    i++;
    if (strcmp(a, "--connect") == 0) {
      connect = next;
    } else if (strcmp(a, "--authkey-file") == 0) {
      keyfile = next;
    } else if (strcmp(a, "--codec") == 0) {
      if (strcmp(next, "pickle") != 0 && strcmp(next, "msgpack") != 0) {
        ret = usage_error("--codec '%s': pickle or msgpack", next);
        goto out;
      }
      o.codec = next;
    } else if (strcmp(a, "--timeout") == 0) {
      char *end;
      o.timeout = strtod(next, &end);
      if (*next == '\0' || *end != '\0' || !(o.timeout >= 0)) {
        ret = usage_error("--timeout '%s': a number of seconds", next);
        goto out;
      }
    } else {
      const char *eq = strchr(next, '=');
      mpx_obj_t *v = NULL;
      if (eq == NULL || eq == next) {
        ret = usage_error("--kw '%s': expected NAME=JSON", next);
        goto out;
      }
      if (mpx_codec_decode(json, eq + 1, strlen(eq + 1), NULL, &v) != 0) {
        fprintf(stderr, "mpx manager call: --kw '%s': %s\n", next,
                mpx_last_error());
        goto out;
      }
      mpx_obj_map_set(kwds, mpx_obj_str(next, (size_t)(eq - next)), v);
    }
  }
  if (connect == NULL || keyfile == NULL) {
    ret = usage_error("%s", "--connect and --authkey-file are required");
    goto out;
  }
  if (npos < (server ? 1 : 2)) {
    ret = usage_error("%s", server ? "expected METHOD [ARG ...]"
                                   : "expected TYPEID METHOD [ARG ...]");
    goto out;
  }
  for (int i = server ? 1 : 2; i < npos; i++) {
    mpx_obj_t *v = NULL;
    if (mpx_codec_decode(json, pos[i], strlen(pos[i]), NULL, &v) != 0) {
      fprintf(stderr, "mpx manager call: argument '%s' is no JSON: %s\n",
              pos[i], mpx_last_error());
      goto out;
    }
    mpx_obj_append(args, v);
  }
  if ((rc = read_key(keyfile, &key, &keylen)) != 0) {
    fprintf(stderr, "mpx manager call: --authkey-file '%s': %s\n", keyfile,
            strerror(-rc));
    goto out;
  }

  ret = EXIT_RUNTIME;
  if ((rc = mpx_mclient_connect(&c, connect, key, keylen, &o)) != 0) {
    fprintf(stderr, "mpx manager call: connect %s: %s\n", connect,
            mpx_last_error());
    goto out;
  }
  if (server) {
    if (mpx_obj_len(kwds) > 0) {
      ret = usage_error("%s", "--kw is for object calls, not --server");
      goto out;
    }
    rc = mpx_mclient_server_call(c, pos[0], args, &result);
  } else {
    if ((rc = mpx_mclient_create(c, &p, pos[0], NULL, NULL)) != 0) {
      fprintf(stderr, "mpx manager call: create %s: %s\n", pos[0],
              mpx_last_error());
      goto out;
    }
    rc = mpx_proxy_call(p, pos[1], args, kwds, &result, &pres);
  }
  if (rc == MPX_EREMOTE) {
    fprintf(stderr, "mpx manager call: %s\n", mpx_last_error());
    goto out;
  }
  if (rc != 0) {
    fprintf(stderr, "mpx manager call: %s: %s\n", pos[server ? 0 : 1],
            mpx_last_error());
    goto out;
  }
  if (pres != NULL) {
    /* A #PROXY reply: name the new object (it goes when we exit). */
    mpx_obj_t *m = mpx_obj_map(2);
    mpx_obj_map_set_str(m, "typeid", mpx_obj_str(mpx_proxy_typeid(pres), SIZE_MAX));
    mpx_obj_map_set_str(m, "id", mpx_obj_str(mpx_proxy_ident(pres), SIZE_MAX));
    result = mpx_obj_map(1);
    mpx_obj_map_set_str(result, "proxy", m);
  }
  if (print_json(stdout, json, result) != 0) {
    fprintf(stderr, "mpx manager call: the result has no JSON form: %s\n",
            mpx_last_error());
    goto out;
  }
  ret = EXIT_DONE;
out:
  mpx_obj_release(result);
  mpx_obj_release(args);
  mpx_obj_release(kwds);
  mpx_proxy_free(pres);
  mpx_proxy_free(p);
  mpx_mclient_free(c);
  free(key);
  free(pos);
  if (fflush(stdout) != 0 && ret == EXIT_DONE) ret = EXIT_RUNTIME;
  return ret;
}
