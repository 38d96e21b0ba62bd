/*
 * Linked into ThreadSanitizer builds only (make tsan): lets TSan see the
 * descriptors libuv closes.
 *
 * Debian's libuv is not instrumented and closes descriptors with
 * syscall(SYS_close, fd) on Linux (uv__close_nocancel), which TSan does not
 * intercept. TSan then keeps a closed socket's history under its number, and
 * the number's next user on another thread (a file the thread pool opens, a
 * dup() of a listener, the /proc/self/fd listing of /metrics) looks like it
 * races with the closed socket's last epoll_ctl. This syscall() takes
 * libuv's calls (the executable's definition comes before libc's), tells
 * TSan about a close, and makes the call with libc's syscall().
 */
#include <dlfcn.h>
#include <sanitizer/linux_syscall_hooks.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/syscall.h>

typedef long (*syscall_fn)(long number, ...);

long syscall(long number, ...)
{
    static syscall_fn libc_syscall; /* resolved once; atomic: any thread may be first */
    syscall_fn real = __atomic_load_n(&libc_syscall, __ATOMIC_ACQUIRE);
    long a[6], rc;
    va_list ap;

    if (real == NULL) {
        real = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
        __atomic_store_n(&libc_syscall, real, __ATOMIC_RELEASE);
    }
    va_start(ap, number); /* at most 6 word-sized arguments; like libc's syscall(), extra ones are ignored */
    for (size_t i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_close)
        __sanitizer_syscall_pre_close(a[0]);
    rc = real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (number == SYS_close)
        __sanitizer_syscall_post_close(rc, a[0]);
    return rc;
}
