/* A look at a shared object's ELF headers before dlopen: glibc maps every
 * loadable segment as the program headers say, and touching a page that
 * lies past the end of a truncated file kills the process with SIGBUS. */
#ifndef MPX_CORE_ELF_CHECK_H
#define MPX_CORE_ELF_CHECK_H

/* Whether the file at path is a shared object dlopen can map safely: ELF
 * of this build's class, byte order and machine, type ET_DYN, its
 * program headers and every segment's bytes inside the file, and its
 * section header table too. 0, or MPX_EPLUGIN with mpx_last_error()
 * "cannot load <what> '<path>': <why>", e.g. "truncated: segment 3
 * (LOAD) ends at byte 12392, the file has 8839 bytes"; an error from
 * open or fstat as its -errno code. */
int mpx__elf_check(const char *what, const char *path);

#endif /* MPX_CORE_ELF_CHECK_H */
