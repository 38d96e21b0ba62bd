/* lib/log.c: untrusted text never puts a control character on stderr, so
 * an etcd key or a backend message cannot forge a journald entry. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

START_TEST(escape_control_characters)
{
    char out[64];

    ck_assert_uint_eq(slb_log_escape("plain text: ok", out, sizeof(out)), 14);
    ck_assert_str_eq(out, "plain text: ok");
    slb_log_escape("a\nb\r\t\x7f\x01z", out, sizeof(out));
    ck_assert_str_eq(out, "a\\x0ab\\x0d\\x09\\x7f\\x01z");
    slb_log_escape("back\\slash", out, sizeof(out));
    ck_assert_str_eq(out, "back\\\\slash");
    slb_log_escape("caf\xc3\xa9", out, sizeof(out)); /* UTF-8 stays as it is */
    ck_assert_str_eq(out, "caf\xc3\xa9");
    /* cut to fit, never in the middle of an escape */
    ck_assert_uint_eq(slb_log_escape("ab\ncd", out, 5), 2);
    ck_assert_str_eq(out, "ab");
    ck_assert_uint_eq(slb_log_escape("x", out, 1), 0);
    ck_assert_str_eq(out, "");
}
END_TEST

/* A whole log line with an embedded newline and a priority prefix stays one line. */
START_TEST(forged_journald_entry_stays_one_line)
{
    char path[] = "/tmp/sidelb-check-log-XXXXXX", buf[512];
    int fd = mkstemp(path), saved = dup(2);
    FILE *f;
    size_t n;

    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    dup2(fd, 2);
    slb_log_write(SLB_LOG_NOTICE, "etcd key %s: bad value", "/svc/x\n<0>sidelb error: forged");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    f = fdopen(fd, "r");
    rewind(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    ck_assert_str_eq(buf, "<5>sidelb notice: etcd key /svc/x\\x0a<0>sidelb error: forged: bad value\n");
}
END_TEST

Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");

    tcase_add_test(tc, escape_control_characters);
    tcase_add_test(tc, forged_journald_entry_stays_one_line);
    suite_add_tcase(s, tc);
    return s;
}
