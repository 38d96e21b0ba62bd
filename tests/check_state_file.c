/* lib/state_file.c: the persisted table's format (round trip, every corrupt input refused), file names, atomic files.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "state_file.h"

static void entry(struct slb_state_entry *e, const char *key, const char *addr, uint32_t weight, const char *zone,
                  const char *metadata)
{
    memset(e, 0, sizeof(*e));
    e->key = strdup(key);
    snprintf(e->ep.addr, sizeof(e->ep.addr), "%s", addr);
    e->ep.weight = weight;
    snprintf(e->ep.zone, sizeof(e->ep.zone), "%s", zone);
    e->ep.metadata = metadata ? strdup(metadata) : NULL;
}

/* A table of three endpoints: plain, weighted with a zone, with metadata. */
static void sample(struct slb_state_table *t)
{
    memset(t, 0, sizeof(*t));
    t->prefix = strdup("/grpclb/echo/");
    t->revision = 42;
    t->written_unix_ms = 1790000000123;
    t->entries = calloc(3, sizeof(*t->entries));
    entry(&t->entries[0], "/grpclb/echo/10.0.0.1:50051", "10.0.0.1:50051", 1, "", NULL);
    entry(&t->entries[1], "/grpclb/echo/b", "[::1]:7000", 25, "zone-a", NULL);
    entry(&t->entries[2], "/grpclb/echo/c", "backend.example:443", 3, "", "{\"v\":2,\"tags\":[\"x\"]}");
    t->entries[2].ep.drain = 1; /* an operator's drain in etcd survives a restart */
    t->n = 3;
}

static void assert_same(const struct slb_state_table *a, const struct slb_state_table *b)
{
    ck_assert_str_eq(a->prefix, b->prefix);
    ck_assert_int_eq(a->revision, b->revision);
    ck_assert_int_eq(a->written_unix_ms, b->written_unix_ms);
    ck_assert_uint_eq(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        ck_assert_str_eq(a->entries[i].key, b->entries[i].key);
        ck_assert_msg(slb_etcd_endpoint_equal(&a->entries[i].ep, &b->entries[i].ep), "entry %zu differs", i);
    }
}

START_TEST(test_roundtrip)
{
    struct slb_state_table t, back;
    char err[512];
    char *text;

    sample(&t);
    text = slb_state_table_format("echo", &t);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(slb_state_table_parse("echo", text, strlen(text), &back, err, sizeof(err)), 0);
    assert_same(&t, &back);
    slb_state_table_dispose(&back);
    free(text);
    /* an empty table is a table (etcd said the prefix is empty) */
    slb_state_table_dispose(&t);
    t.prefix = strdup("/p/");
    text = slb_state_table_format("echo", &t);
    ck_assert_int_eq(slb_state_table_parse("echo", text, strlen(text), &back, err, sizeof(err)), 0);
    ck_assert_uint_eq(back.n, 0);
    slb_state_table_dispose(&back);
    slb_state_table_dispose(&t);
    free(text);
}
END_TEST

/* Every prefix of a good file (a write cut short, a truncated copy) is refused, never half-read. */
START_TEST(test_truncated)
{
    struct slb_state_table t, back;
    char err[512];
    char *text;

    sample(&t);
    text = slb_state_table_format("echo", &t);
    for (size_t len = 0; len < strlen(text); len++) {
        /* the text ends in '}': any shorter prefix is not a whole JSON object */
        err[0] = '\0';
        ck_assert_int_eq(slb_state_table_parse("echo", text, len, &back, err, sizeof(err)), SLB_EPROTO);
        ck_assert_msg(err[0] != '\0', "no message for length %zu", len);
        ck_assert_ptr_null(back.entries);
    }
    slb_state_table_dispose(&t);
    free(text);
}
END_TEST

START_TEST(test_corrupt)
{
#define HEAD "\"format\":1,\"cluster\":\"echo\",\"prefix\":\"/p/\",\"revision\":3,\"written_unix_ms\":5,"
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"", "invalid JSON"},
        {"[]", "not a JSON object"},
        {"{" HEAD "\"endpoints\":[],\"extra\":1}", "unknown field \"extra\""},
        {"{\"format\":2,\"cluster\":\"echo\",\"prefix\":\"/p/\",\"revision\":3,\"written_unix_ms\":5,\"endpoints\":[]}",
         "format 2"},
        {"{\"format\":1,\"cluster\":\"other\",\"prefix\":\"/p/"
         "\",\"revision\":3,\"written_unix_ms\":5,\"endpoints\":[]}",
         "\"cluster\" is not"},
        {"{\"format\":1,\"cluster\":\"echo\",\"prefix\":\"\",\"revision\":3,\"written_unix_ms\":5,\"endpoints\":[]}",
         "\"prefix\""},
        {"{\"format\":1,\"cluster\":\"echo\",\"prefix\":\"/p/"
         "\",\"revision\":-3,\"written_unix_ms\":5,\"endpoints\":[]}",
         "\"revision\""},
        {"{\"format\":1,\"cluster\":\"echo\",\"prefix\":\"/p/"
         "\",\"revision\":3,\"written_unix_ms\":\"5\",\"endpoints\":[]}",
         "\"written_unix_ms\""},
        {"{" HEAD "\"endpoints\":{}}", "\"endpoints\" must be an array"},
        {"{" HEAD "\"endpoints\":[\"/p/a\"]}", "endpoints[0]: must be"},
        {"{" HEAD "\"endpoints\":[{\"key\":\"/p/a\",\"value\":\"127.0.0.1:1\"}]}", "endpoints[0]: must be"},
        {"{" HEAD "\"endpoints\":[{\"key\":\"/p/a\",\"value\":{\"addr\":\"127.0.0.1:1\"},\"x\":1}]}",
         "endpoints[0]: must be"},
        {"{" HEAD "\"endpoints\":[{\"key\":\"/q/a\",\"value\":{\"addr\":\"127.0.0.1:1\"}}]}", "not under the prefix"},
        {"{" HEAD "\"endpoints\":[{\"key\":\"/p/a\",\"value\":{\"addr\":\"no port\"}}]}", "\"addr\""},
        {"{" HEAD "\"endpoints\":[{\"key\":\"/p/a\",\"value\":{\"addr\":\"127.0.0.1:1\",\"weight\":0}}]}", "weight"},
        {"{" HEAD "\"endpoints\":[{\"key\":\"/p/a\",\"value\":{\"Op\":1,\"Addr\":\"127.0.0.1:1\"}}]}", "a delete"},
        {"{" HEAD "\"endpoints\":[{\"key\":\"/p/a\",\"value\":{\"addr\":\"127.0.0.1:1\"}},"
         "{\"key\":\"/p/a\",\"value\":{\"addr\":\"127.0.0.1:2\"}}]}",
         "endpoints[1]: key listed twice"},
        {"{" HEAD "\"endpoints\":[],\"endpoints\":[]}", "duplicate"},
        {"{\"a\\nb\":1}", "unknown field \"a?b\""}, /* one log line (found by fuzz_state_file) */
        {"{\"a\":\"\\x\n\"}", "invalid JSON"},
    };
#undef HEAD
    struct slb_state_table t;
    char err[512];

    for (size_t i = 0; i < SLB_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        ck_assert_msg(slb_state_table_parse("echo", bad[i].text, strlen(bad[i].text), &t, err, sizeof(err)) < 0,
                      "accepted: %s", bad[i].text);
        ck_assert_msg(strstr(err, bad[i].why) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].why);
        ck_assert_msg(strpbrk(err, "\n\r") == NULL, "case %zu: more than one line: %s", i, err);
        ck_assert_ptr_null(t.entries);
        ck_assert_ptr_null(t.prefix);
    }
}
END_TEST

START_TEST(test_path)
{
    char p[64];

    ck_assert_int_eq(slb_state_file_path("/var/lib/sidelb", "echo-1.v2_x", p, sizeof(p)), 0);
    ck_assert_str_eq(p, "/var/lib/sidelb/cluster-echo-1.v2_x.json");
    ck_assert_int_eq(slb_state_file_path("/d", "../a/b c", p, sizeof(p)), 0);
    ck_assert_str_eq(p, "/d/cluster-%2E.%2Fa%2Fb%20c.json");
    ck_assert_int_eq(slb_state_file_path("/d", "\xc3\xa9", p, sizeof(p)), 0);
    ck_assert_str_eq(p, "/d/cluster-%C3%A9.json");
    /* distinct names stay distinct: '%' itself is encoded */
    ck_assert_int_eq(slb_state_file_path("/d", "%2F", p, sizeof(p)), 0);
    ck_assert_str_eq(p, "/d/cluster-%252F.json");
    ck_assert_int_eq(slb_state_file_path("/d", "a-name-far-too-long-for-the-buffer-given-here-by-far", p, 40),
                     SLB_ELIMIT);
    ck_assert_int_eq(slb_state_file_path("/d", "abcdefghijklmnopqrstuvwxyzabcd", p, 46),
                     SLB_ELIMIT); /* 46 bytes + NUL */
    ck_assert_int_eq(slb_state_file_path("/d", "abcdefghijklmnopqrstuvwxyzabcd", p, 47), 0);
}
END_TEST

static int files_in(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

START_TEST(test_files)
{
    char dir[] = "/tmp/check-state-XXXXXX", path[256], err[1024];
    struct slb_state_table t, back;
    FILE *f;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    sample(&t);
    ck_assert_int_eq(slb_state_file_read(dir, "echo", &back, err, sizeof(err)), SLB_ENOTFOUND);
    ck_assert_int_eq(slb_state_file_write(dir, "echo", &t, err, sizeof(err)), 0);
    ck_assert_int_eq(files_in(dir), 1); /* the temp file was renamed, nothing left behind */
    ck_assert_int_eq(slb_state_file_read(dir, "echo", &back, err, sizeof(err)), 0);
    assert_same(&t, &back);
    slb_state_table_dispose(&back);
    /* replaced as a whole */
    t.revision = 43;
    ck_assert_int_eq(slb_state_file_write(dir, "echo", &t, err, sizeof(err)), 0);
    ck_assert_int_eq(slb_state_file_read(dir, "echo", &back, err, sizeof(err)), 0);
    ck_assert_int_eq(back.revision, 43);
    slb_state_table_dispose(&back);
    ck_assert_int_eq(files_in(dir), 1);
    /* a file cut short: refused with the file's name in the message */
    ck_assert_int_eq(slb_state_file_path(dir, "echo", path, sizeof(path)), 0);
    ck_assert_int_eq(truncate(path, 40), 0);
    ck_assert_int_eq(slb_state_file_read(dir, "echo", &back, err, sizeof(err)), SLB_EPROTO);
    ck_assert_msg(strstr(err, path) != NULL && strstr(err, "invalid JSON") != NULL, "%s", err);
    /* empty */
    ck_assert_ptr_nonnull(f = fopen(path, "w"));
    fclose(f);
    ck_assert_int_eq(slb_state_file_read(dir, "echo", &back, err, sizeof(err)), SLB_EPROTO);
    ck_assert_msg(strstr(err, "empty") != NULL, "%s", err);
    unlink(path);
    /* a directory that does not exist: an error naming the file, nothing written */
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    ck_assert_int_lt(slb_state_file_write(missing, "echo", &t, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "cannot create") != NULL && strstr(err, missing) != NULL, "%s", err);
    ck_assert_int_eq(files_in(dir), 0);
    slb_state_table_dispose(&t);
    rmdir(dir);
}
END_TEST

Suite *state_file_suite(void)
{
    Suite *s = suite_create("state_file");
    TCase *tc = tcase_create("state_file");
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_truncated);
    tcase_add_test(tc, test_corrupt);
    tcase_add_test(tc, test_path);
    tcase_add_test(tc, test_files);
    suite_add_tcase(s, tc);
    return s;
}
