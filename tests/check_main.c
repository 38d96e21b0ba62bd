/* Runs every unit suite (tests/check_<module>.c exports <module>_suite()). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#define SLB_SUITE(name) Suite *name##_suite(void);
#include "suites.h"
#undef SLB_SUITE

int main(int argc, char **argv)
{
    SRunner *sr = srunner_create(NULL);
    int failed;

    /* argv[1] may name one suite to run alone; "--except NAME" runs all the others. */
    int except = argc >= 3 && strcmp(argv[1], "--except") == 0;
#define SLB_SUITE(name)                                                                                                \
    if (argc < 2 || (except ? strcmp(argv[2], #name) != 0 : strcmp(argv[1], #name) == 0))                              \
        srunner_add_suite(sr, name##_suite());
#include "suites.h"
#undef SLB_SUITE
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
