#include "sdw_test.h"

static void test_error_set_and_prefix(void) {
    sdw_error err = {0};
    ASSERT_EQ_INT(sdw_error_set(&err, SDW_E_SHAPE, "tensor %s: want %d", "x", 3), SDW_E_SHAPE);
    sdw_error_prefix(&err, "file %s", "a.safetensors");
    ASSERT_STR_CONTAINS(err.msg, "file a.safetensors: tensor x: want 3");
    ASSERT_EQ_INT(err.code, SDW_E_SHAPE);
    ASSERT_STR_CONTAINS(sdw_status_str(SDW_CANCELLED), "cancelled");
}

int main(void) {
    RUN(test_error_set_and_prefix);
    return sdw_test_finish();
}
