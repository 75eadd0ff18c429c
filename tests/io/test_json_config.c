/* json_config: every getter on present, absent, null, wrong-type and out-of-range keys, Python's
 * NaN / Infinity literals, malformed JSON (line and column as written), loading and wrapping. */
#include "io/json_config.h"
#include "sdw_test.h"

#include <jansson.h>
#include <math.h>

#define LABEL "cfg.json"

/* One config over text for a test; parse failures fail the test. */
static bool parse(const char *text, sdw_json_config *c) {
    sdw_error err = {0};
    sdw_status st = sdw_json_config_parse(text, strlen(text), LABEL, c, &err);
    if (st != SDW_OK) sdw_test_fail(__FILE__, __LINE__, "parse: %s", err.msg);
    return st == SDW_OK;
}

static const char *const SAMPLE =
    "{\"i\": 7, \"i_real\": 3.0, \"i_frac\": 2.5, \"big\": 9007199254740993, \"neg\": -4,"
    " \"x\": 0.125, \"s\": \"hi\", \"b\": true, \"f\": false, \"n\": null, \"arr\": [1, 2, 3],"
    " \"obj\": {\"k\": 1}, \"strs\": [\"a\", \"b\"], \"mixed\": [1, \"two\"], \"empty\": [],"
    " \"pinf\": Infinity, \"ninf\": -Infinity, \"nan\": NaN, \"snan\": \"NaN\"}";

static void test_int(void) {
    sdw_json_config c;
    if (!parse(SAMPLE, &c)) return;
    sdw_error err = {0};
    int v = -1;
    ASSERT_OK(sdw_json_config_int(&c, "i", 0, 10, &v, &err), &err);
    ASSERT_EQ_INT(v, 7);
    ASSERT_OK(sdw_json_config_int(&c, "neg", -10, 10, &v, &err), &err);
    ASSERT_EQ_INT(v, -4);
    ASSERT_OK(sdw_json_config_int(&c, "i_real", 0, 10, &v, &err), &err); /* integral real */
    ASSERT_EQ_INT(v, 3);
    v = 42; /* absent and null keep the default */
    ASSERT_OK(sdw_json_config_int(&c, "absent", 0, 10, &v, &err), &err);
    ASSERT_OK(sdw_json_config_int(&c, "n", 0, 10, &v, &err), &err);
    ASSERT_EQ_INT(v, 42);

    ASSERT_STATUS(sdw_json_config_int(&c, "i", 8, 10, &v, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, LABEL ": \"i\": want an integer in [8, 10], got 7");
    ASSERT_STATUS(sdw_json_config_int(&c, "i_frac", 0, 10, &v, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "2.5");
    ASSERT_STATUS(sdw_json_config_int(&c, "big", 0, 1 << 30, &v, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "9007199254740993"); /* exact, not rounded through a double */
    ASSERT_STATUS(sdw_json_config_int(&c, "nan", 0, 10, &v, &err), SDW_E_INVALID_ARG);
    ASSERT_STATUS(sdw_json_config_int(&c, "pinf", 0, 10, &v, &err), SDW_E_INVALID_ARG);
    ASSERT_STATUS(sdw_json_config_int(&c, "s", 0, 10, &v, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "\"s\": want an integer, got a string");
    ASSERT_STATUS(sdw_json_config_int(&c, "b", 0, 10, &v, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "got a boolean");
    ASSERT_STATUS(sdw_json_config_int(&c, "arr", 0, 10, &v, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "got an array");
    ASSERT_EQ_INT(v, 42); /* untouched by every failure */
    sdw_json_config_free(&c);
}

static void test_number_and_float(void) {
    sdw_json_config c;
    if (!parse(SAMPLE, &c)) return;
    sdw_error err = {0};
    double d = -1;
    ASSERT_OK(sdw_json_config_number(&c, "x", 0, 1, &d, &err), &err);
    ASSERT_TRUE(d == 0.125);
    ASSERT_OK(sdw_json_config_number(&c, "i", 0, 10, &d, &err), &err); /* integers are numbers */
    ASSERT_TRUE(d == 7);
    /* the Python literals, and the strings they become */
    ASSERT_OK(sdw_json_config_number(&c, "ninf", -INFINITY, 0, &d, &err), &err);
    ASSERT_TRUE(isinf(d) && d < 0);
    ASSERT_OK(sdw_json_config_number(&c, "pinf", 0, INFINITY, &d, &err), &err);
    ASSERT_TRUE(isinf(d) && d > 0);
    ASSERT_STATUS(sdw_json_config_number(&c, "pinf", 0, 1e300, &d, &err), SDW_E_INVALID_ARG);
    ASSERT_STATUS(sdw_json_config_number(&c, "nan", -INFINITY, INFINITY, &d, &err),
                  SDW_E_INVALID_ARG); /* NaN never passes */
    ASSERT_STR_CONTAINS(err.msg, "\"nan\": want a number in [-inf, inf], got nan");
    ASSERT_STATUS(sdw_json_config_number(&c, "snan", -INFINITY, INFINITY, &d, &err),
                  SDW_E_INVALID_ARG);
    d = 5;
    ASSERT_OK(sdw_json_config_number(&c, "absent", 0, 1, &d, &err), &err);
    ASSERT_OK(sdw_json_config_number(&c, "n", 0, 1, &d, &err), &err);
    ASSERT_TRUE(d == 5);
    ASSERT_STATUS(sdw_json_config_number(&c, "x", 0.5, 1, &d, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "\"x\": want a number in [0.5, 1], got 0.125");
    ASSERT_STATUS(sdw_json_config_number(&c, "s", 0, 1, &d, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "want a number, got a string");
    ASSERT_STATUS(sdw_json_config_number(&c, "obj", 0, 1, &d, &err), SDW_E_FORMAT);
    ASSERT_TRUE(d == 5);

    float f = 9;
    ASSERT_OK(sdw_json_config_float(&c, "x", 0, 1, &f, &err), &err);
    ASSERT_TRUE(f == 0.125f);
    f = 9;
    ASSERT_OK(sdw_json_config_float(&c, "absent", 0, 1, &f, &err), &err);
    ASSERT_OK(sdw_json_config_float(&c, "n", 0, 1, &f, &err), &err);
    ASSERT_STATUS(sdw_json_config_float(&c, "i", 0, 1, &f, &err), SDW_E_INVALID_ARG);
    ASSERT_STATUS(sdw_json_config_float(&c, "b", 0, 1, &f, &err), SDW_E_FORMAT);
    ASSERT_TRUE(f == 9);
    sdw_json_config_free(&c);
}

static void test_bool_string_enum(void) {
    sdw_json_config c;
    if (!parse(SAMPLE, &c)) return;
    sdw_error err = {0};
    bool b = false;
    ASSERT_OK(sdw_json_config_bool(&c, "b", &b, &err), &err);
    ASSERT_TRUE(b);
    ASSERT_OK(sdw_json_config_bool(&c, "f", &b, &err), &err);
    ASSERT_TRUE(!b);
    b = true;
    ASSERT_OK(sdw_json_config_bool(&c, "absent", &b, &err), &err);
    ASSERT_OK(sdw_json_config_bool(&c, "n", &b, &err), &err);
    ASSERT_STATUS(sdw_json_config_bool(&c, "i", &b, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "\"i\": want true or false, got an integer");
    ASSERT_STATUS(sdw_json_config_bool(&c, "nan", &b, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "got a number"); /* a literal reads as what it stands for */
    ASSERT_TRUE(b);

    const char *s = "default";
    ASSERT_OK(sdw_json_config_string(&c, "absent", &s, &err), &err);
    ASSERT_OK(sdw_json_config_string(&c, "n", &s, &err), &err);
    ASSERT_TRUE(strcmp(s, "default") == 0);
    ASSERT_OK(sdw_json_config_string(&c, "s", &s, &err), &err);
    ASSERT_TRUE(strcmp(s, "hi") == 0);
    ASSERT_STATUS(sdw_json_config_string(&c, "obj", &s, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "want a string, got an object");
    ASSERT_TRUE(strcmp(s, "hi") == 0);

    static const char *const names[] = {"lo", "hi", "mid"};
    int e = -1;
    ASSERT_OK(sdw_json_config_enum(&c, "s", names, 3, &e, &err), &err);
    ASSERT_EQ_INT(e, 1);
    e = -1;
    ASSERT_OK(sdw_json_config_enum(&c, "absent", names, 3, &e, &err), &err);
    ASSERT_OK(sdw_json_config_enum(&c, "n", names, 3, &e, &err), &err);
    ASSERT_EQ_INT(e, -1);
    ASSERT_STATUS(sdw_json_config_enum(&c, "s", names, 1, &e, &err), SDW_E_UNSUPPORTED);
    ASSERT_STR_CONTAINS(err.msg, "\"s\": \"hi\" is not supported (want one of \"lo\")");
    ASSERT_STATUS(sdw_json_config_enum(&c, "i", names, 3, &e, &err), SDW_E_FORMAT);
    ASSERT_EQ_INT(e, -1);
    sdw_json_config_free(&c);
}

static void test_lists(void) {
    sdw_json_config c;
    if (!parse(SAMPLE, &c)) return;
    sdw_error err = {0};
    int v[4] = {9, 9, 9, 9}, n = -1;
    ASSERT_OK(sdw_json_config_int_list(&c, "arr", 4, 0, 10, v, &n, &err), &err);
    ASSERT_EQ_INT(n, 3);
    ASSERT_TRUE(v[0] == 1 && v[1] == 2 && v[2] == 3 && v[3] == 9);
    int w[2] = {9, 9}, m = -1;
    ASSERT_OK(sdw_json_config_int_list(&c, "absent", 2, 0, 10, w, &m, &err), &err);
    ASSERT_OK(sdw_json_config_int_list(&c, "n", 2, 0, 10, w, &m, &err), &err);
    ASSERT_STATUS(sdw_json_config_int_list(&c, "arr", 2, 0, 10, w, &m, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "\"arr\": want an array of 1 to 2 integers, got 3 entries");
    ASSERT_STATUS(sdw_json_config_int_list(&c, "empty", 2, 0, 10, w, &m, &err), SDW_E_FORMAT);
    ASSERT_STATUS(sdw_json_config_int_list(&c, "i", 2, 0, 10, w, &m, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "got an integer");
    ASSERT_STATUS(sdw_json_config_int_list(&c, "arr", 4, 2, 10, v, &m, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, "\"arr\"[0]: want an integer in [2, 10], got 1");
    ASSERT_STATUS(sdw_json_config_int_list(&c, "mixed", 4, 0, 10, v, &m, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "\"mixed\"[1]: want an integer, got a string");
    ASSERT_TRUE(w[0] == 9 && w[1] == 9 && m == -1 && v[0] == 1); /* untouched on failure */

    const char *s[3] = {NULL, NULL, NULL};
    ASSERT_OK(sdw_json_config_string_list(&c, "strs", 3, s, &n, &err), &err);
    ASSERT_EQ_INT(n, 2);
    ASSERT_TRUE(strcmp(s[0], "a") == 0 && strcmp(s[1], "b") == 0 && s[2] == NULL);
    const char *t[2] = {"x", "x"};
    m = -1;
    ASSERT_OK(sdw_json_config_string_list(&c, "absent", 2, t, &m, &err), &err);
    ASSERT_OK(sdw_json_config_string_list(&c, "n", 2, t, &m, &err), &err);
    ASSERT_STATUS(sdw_json_config_string_list(&c, "mixed", 2, t, &m, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "\"mixed\"[0]: want a string, got an integer");
    ASSERT_STATUS(sdw_json_config_string_list(&c, "strs", 1, t, &m, &err), SDW_E_FORMAT);
    ASSERT_STATUS(sdw_json_config_string_list(&c, "empty", 2, t, &m, &err), SDW_E_FORMAT);
    ASSERT_STATUS(sdw_json_config_string_list(&c, "s", 2, t, &m, &err), SDW_E_FORMAT);
    ASSERT_TRUE(t[0][0] == 'x' && t[1][0] == 'x' && m == -1);
    sdw_json_config_free(&c);
}

static void test_has(void) {
    sdw_json_config c;
    if (!parse(SAMPLE, &c)) return;
    ASSERT_TRUE(sdw_json_config_has(&c, "i") && sdw_json_config_has(&c, "f"));
    ASSERT_TRUE(sdw_json_config_has(&c, "nan") && sdw_json_config_has(&c, "empty"));
    ASSERT_TRUE(!sdw_json_config_has(&c, "n") && !sdw_json_config_has(&c, "absent"));
    sdw_json_config_free(&c);
}

/* Literals are quoted only outside strings; strings that contain them are left as written. */
static void test_relaxed_literals(void) {
    sdw_json_config c;
    if (!parse("{\"s\": \"x -Infinity NaN \\\" NaN\", \"a\": [NaN,-Infinity], \"Infinity\": 1}",
               &c))
        return;
    sdw_error err = {0};
    const char *s = NULL;
    ASSERT_OK(sdw_json_config_string(&c, "s", &s, &err), &err);
    ASSERT_TRUE(strcmp(s, "x -Infinity NaN \" NaN") == 0);
    int v = 0;
    ASSERT_OK(sdw_json_config_int(&c, "Infinity", 0, 5, &v, &err), &err); /* a key stays a key */
    ASSERT_EQ_INT(v, 1);
    const char *a[2];
    int n = 0;
    ASSERT_OK(sdw_json_config_string_list(&c, "a", 2, a, &n, &err), &err);
    ASSERT_TRUE(n == 2 && strcmp(a[0], "NaN") == 0 && strcmp(a[1], "-Infinity") == 0);
    sdw_json_config_free(&c);
}

static void test_malformed(void) {
    static const struct {
        const char *text, *where;
    } cases[] = {
        {"{\"a\": }", "line 1 column 7"},
        {"{\"a\":\n  1,, }", "line 2 column 5"},
        {"{\"é\": x}", "line 1 column 7"}, /* columns count characters, as jansson's do */
        /* the quotes added around a literal do not move the column */
        {"{\"a\": NaN, \"b\": -Infinity, \"c\": }", "line 1 column 33"},
        {"{\"a\": [Infinity,\n NaN NaN]}", "line 2 column 8"},
        {"", "line 1 column 0"},
        {"{\"a\": 1} x", "line 1 column 10"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(cases); i++) {
        sdw_json_config c;
        sdw_error err = {0};
        ASSERT_STATUS(sdw_json_config_parse(cases[i].text, strlen(cases[i].text), LABEL, &c, &err),
                      SDW_E_FORMAT);
        ASSERT_STR_CONTAINS(err.msg, LABEL ": invalid JSON at ");
        ASSERT_STR_CONTAINS(err.msg, cases[i].where);
        ASSERT_TRUE(c.root == NULL);
    }
    /* the top level must be an object; jansson itself refuses scalars there */
    static const struct {
        const char *text, *why;
    } not_object[] = {
        {"[1, 2]", "want a JSON object, got an array"},
        {"3", "invalid JSON at line 1"},
        {"NaN", "invalid JSON at line 1"},
    };
    for (size_t i = 0; i < SDW_ARRAY_LEN(not_object); i++) {
        sdw_json_config c;
        sdw_error err = {0};
        const char *t = not_object[i].text;
        ASSERT_STATUS(sdw_json_config_parse(t, strlen(t), LABEL, &c, &err), SDW_E_FORMAT);
        ASSERT_STR_CONTAINS(err.msg, LABEL ": ");
        ASSERT_STR_CONTAINS(err.msg, not_object[i].why);
        ASSERT_TRUE(c.root == NULL);
    }
}

static void test_load_and_wrap(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", sdw_test_tmpdir());
    FILE *f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("{\"text_config\": {\"hidden_size\": \"wide\"}, \"lambda_min_clipped\": -Infinity}", f);
    fclose(f);
    sdw_json_config c, tc;
    sdw_error err = {0};
    ASSERT_OK(sdw_json_config_load(path, &c, &err), &err);
    ASSERT_TRUE(strcmp(c.what, path) == 0);
    double d = 0;
    ASSERT_OK(sdw_json_config_number(&c, "lambda_min_clipped", -INFINITY, 0, &d, &err), &err);
    ASSERT_TRUE(isinf(d) && d < 0);
    int v = 0;
    ASSERT_STATUS(sdw_json_config_int(&c, "lambda_min_clipped", 0, 1, &v, &err), SDW_E_INVALID_ARG);
    ASSERT_STR_CONTAINS(err.msg, path); /* errors name the file */

    /* a member object as a config of its own; it outlives the parent's reference */
    ASSERT_OK(
        sdw_json_config_wrap(json_object_get(c.root, "text_config"), "text_config", &tc, &err),
        &err);
    sdw_json_config_free(&c);
    ASSERT_TRUE(c.root == NULL);
    ASSERT_STATUS(sdw_json_config_int(&tc, "hidden_size", 1, 10, &v, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "text_config: \"hidden_size\": want an integer, got a string");
    sdw_json_config_free(&tc);
    sdw_json_config_free(NULL);

    json_t *arr = json_array();
    ASSERT_STATUS(sdw_json_config_wrap(arr, "x", &tc, &err), SDW_E_FORMAT);
    ASSERT_STR_CONTAINS(err.msg, "x: want a JSON object, got an array");
    ASSERT_STATUS(sdw_json_config_wrap(NULL, "x", &tc, &err), SDW_E_FORMAT);
    json_decref(arr);

    snprintf(path, sizeof path, "%s/missing.json", sdw_test_tmpdir());
    ASSERT_STATUS(sdw_json_config_load(path, &c, &err), SDW_E_IO);
    ASSERT_STR_CONTAINS(err.msg, "missing.json");
    ASSERT_TRUE(c.root == NULL);
}

int main(void) {
    RUN(test_int);
    RUN(test_number_and_float);
    RUN(test_bool_string_enum);
    RUN(test_lists);
    RUN(test_has);
    RUN(test_relaxed_literals);
    RUN(test_malformed);
    RUN(test_load_and_wrap);
    return sdw_test_finish();
}
