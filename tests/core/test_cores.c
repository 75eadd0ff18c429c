/* Usable cores: the cgroup CPU-limit parsers (v2 cpu.max, v1 cfs quota/period) and the count
 * this process gets (within its affinity mask, at least 1). */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "sdw_test.h"

#include "core/common.h"

#include <sched.h>

static void test_cgroup_v2(void) {
    ASSERT_EQ_INT(sdw__cgroup_v2_cores("max 100000\n"), 0); /* no limit */
    ASSERT_EQ_INT(sdw__cgroup_v2_cores("200000 100000\n"), 2);
    ASSERT_EQ_INT(sdw__cgroup_v2_cores("150000 100000"), 2); /* 1.5 CPUs: round up */
    ASSERT_EQ_INT(sdw__cgroup_v2_cores("50000 100000"), 1);
    ASSERT_EQ_INT(sdw__cgroup_v2_cores("400000"), 4); /* period defaults to 100000 */
    ASSERT_EQ_INT(sdw__cgroup_v2_cores(""), 0);
    ASSERT_EQ_INT(sdw__cgroup_v2_cores("garbage"), 0);
    ASSERT_EQ_INT(sdw__cgroup_v2_cores("0 100000"), 0);
    ASSERT_EQ_INT(sdw__cgroup_v2_cores(NULL), 0);
}

static void test_cgroup_v1(void) {
    ASSERT_EQ_INT(sdw__cgroup_v1_cores("-1\n", "100000\n"), 0); /* no limit */
    ASSERT_EQ_INT(sdw__cgroup_v1_cores("300000\n", "100000\n"), 3);
    ASSERT_EQ_INT(sdw__cgroup_v1_cores("250000", "100000"), 3);
    ASSERT_EQ_INT(sdw__cgroup_v1_cores("100000", "0"), 0);
    ASSERT_EQ_INT(sdw__cgroup_v1_cores("", ""), 0);
}

static void test_usable_cores(void) {
    cpu_set_t set;
    ASSERT_TRUE(sched_getaffinity(0, sizeof set, &set) == 0);
    const int n = sdw_usable_cores();
    ASSERT_TRUE(n >= 1);
    ASSERT_TRUE(n <= CPU_COUNT(&set));
}

int main(void) {
    RUN(test_cgroup_v2);
    RUN(test_cgroup_v1);
    RUN(test_usable_cores);
    return sdw_test_finish();
}
