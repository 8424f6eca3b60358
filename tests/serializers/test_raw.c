#include "../mpx_test.h"
static void test_placeholder(void) { CU_PASS("being written"); }
MPX_TEST_MAIN("raw", MPX_TEST(test_placeholder))
