/* AUTOMATIC1111's prompt syntax (text/prompt_parser.h). The expected pieces are A1111's own
 * doctests of parse_prompt_attention (modules/prompt_parser.py), its weights to the double,
 * and cases written from its rules (BREAK, escapes, weights, the emphasis rescale). */
#include "sdw_test.h"

#include "text/prompt_parser.h"

#include <stdlib.h>

typedef struct want {
    const char *text; /* NULL = BREAK */
    double weight;
} want;

/* Parses prompt and checks the pieces equal want[0..n) exactly (weights bit for bit). */
static void check(const char *prompt, const want *w, int n) {
    sdw_prompt_pieces pp;
    sdw_error err = {0};
    ASSERT_OK(sdw_prompt_parse(prompt, &pp, &err), &err);
    bool same = pp.n == n;
    for (int i = 0; same && i < n; i++) {
        if (!w[i].text) same = pp.v[i].is_break;
        else same = !pp.v[i].is_break && !strcmp(pp.v[i].text, w[i].text) &&
                    pp.v[i].weight == w[i].weight;
    }
    if (!same) {
        fprintf(stderr, "  %s ->", prompt);
        for (int i = 0; i < pp.n; i++)
            fprintf(stderr, pp.v[i].is_break ? " BREAK" : " ['%s', %.17g]", pp.v[i].text,
                    pp.v[i].weight);
        fprintf(stderr, "\n");
    }
    sdw_prompt_pieces_free(&pp);
    ASSERT_TRUE(same);
}
#define CHECK(prompt, ...)                                                                         \
    do {                                                                                           \
        const want w_[] = {__VA_ARGS__};                                                           \
        check(prompt, w_, (int)(sizeof w_ / sizeof w_[0]));                                        \
    } while (0)

/* The doctests of parse_prompt_attention, verbatim. */
static void test_a1111_doctests(void) {
    CHECK("normal text", {"normal text", 1.0});
    CHECK("an (important) word", {"an ", 1.0}, {"important", 1.1}, {" word", 1.0});
    CHECK("(unbalanced", {"unbalanced", 1.1});
    CHECK("\\(literal\\]", {"(literal]", 1.0});
    CHECK("(unnecessary)(parens)", {"unnecessaryparens", 1.1});
    CHECK("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", {"a ", 1.0},
          {"house", 1.5730000000000004}, {" ", 1.1}, {"on", 1.0}, {" a ", 1.1}, {"hill", 0.55},
          {", sun, ", 1.1}, {"sky", 1.4641000000000006}, {".", 1.1});
}

/* Weights multiply innermost first, in Python's double arithmetic; '[' is x (1 / 1.1), which
 * is not the same double as / 1.1. */
static void test_weights(void) {
    const double sq = 1 / 1.1;
    CHECK("((a))", {"a", 1.1 * 1.1});
    CHECK("[a]", {"a", 1.0 * sq});
    CHECK("[[a]]", {"a", 1.0 * sq * sq});
    CHECK("x (a:1.3) y", {"x ", 1.0}, {"a", 1.3}, {" y", 1.0});
    CHECK("(a:-0.5)", {"a", -0.5});
    CHECK("(a:+2)", {"a", 2.0});
    CHECK("(a:.5)(b:2.)", {"a", 0.5}, {"b", 2.0});
    CHECK("((a:1.2) b)", {"a", 1.2 * 1.1}, {" b", 1.1});
    CHECK("[(a:1.5)]", {"a", 1.5 * sq});
    CHECK("(a:0)", {"a", 0.0});
    /* left open: every '(' (x1.1) then every '[' */
    CHECK("(a [b", {"a ", 1.1}, {"b", 1.0 * 1.1 * sq});
    /* a weight with spaces is no weight: ':' is text, the ')' closes the bracket */
    CHECK("(a: 1.2)", {"a: 1.2", 1.1});
    /* mixed: equal weights merge, whatever brackets made them */
    CHECK("(a)(b:1.1)", {"ab", 1.1});
}

static void test_text_markup(void) {
    CHECK("a) b] c:d", {"a) b] c:d", 1.0});
    CHECK("a:1.5) b", {"a:1.5) b", 1.0}); /* a weight with no '(' open is text */
    CHECK("\\\\", {"\\", 1.0});
    CHECK("a\\b", {"ab", 1.0}); /* a lone backslash is dropped */
    CHECK("(a\\)b)", {"a)b", 1.1});
    CHECK("\\((a)\\)", {"(", 1.0}, {"a", 1.1}, {")", 1.0});
    CHECK("", {"", 1.0});
    CHECK("()", {"", 1.0});
    CHECK("embedding:x", {"embedding:x", 1.0});
}

/* re.split(r"\s*\bBREAK\b\s*"): the whitespace around it goes, a word part of another does not
 * break, and nothing merges across a BREAK. */
static void test_break(void) {
    CHECK("a BREAK b", {"a", 1.0}, {NULL, 0}, {"b", 1.0});
    CHECK("a  \t BREAK\n\n b", {"a", 1.0}, {NULL, 0}, {"b", 1.0});
    CHECK("BREAK", {"", 1.0}, {NULL, 0}, {"", 1.0});
    CHECK("a BREAK BREAK b", {"a", 1.0}, {NULL, 0}, {"", 1.0}, {NULL, 0}, {"b", 1.0});
    CHECK("aBREAK b BREAKs _BREAK BREAK_ break", {"aBREAK b BREAKs _BREAK BREAK_ break", 1.0});
    CHECK("a,BREAK,b", {"a,", 1.0}, {NULL, 0}, {",b", 1.0});
    CHECK("\xc3\xa9" "BREAK b", {"\xc3\xa9" "BREAK b", 1.0}); /* é is a letter */
    CHECK("a\xc2\xa0" "BREAK b", {"a", 1.0}, {NULL, 0}, {"b", 1.0}); /* NBSP is \s */
    CHECK("(a BREAK b)", {"a", 1.1}, {NULL, 0}, {"b", 1.1});
    /* the run "BREAK" splits into "", BREAK, "": empty pieces of weight 1 on both sides */
    CHECK("(a)BREAK(b)", {"a", 1.1}, {"", 1.0}, {NULL, 0}, {"", 1.0}, {"b", 1.1});
}

static void test_bad_weight(void) {
    const char *bad[] = {"(a:1.2.3)", "(a:.)", "(a:+.)", "((a:..))"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sdw_prompt_pieces pp = {0};
        sdw_error err = {0};
        ASSERT_STATUS(sdw_prompt_parse(bad[i], &pp, &err), SDW_E_INVALID_ARG);
        ASSERT_STR_CONTAINS(err.msg, "is not a number");
        ASSERT_TRUE(pp.v == NULL);
    }
}

/* Bytes that are not UTF-8 (stray continuation bytes next to a BREAK: fuzz_prompt found a
 * negative length there) parse without reading outside the prompt; the tokenizer refuses them
 * later. */
static void test_not_utf8(void) {
    static const char crash[] = " t BREAK \xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf\xaf"
                                "BREAK a (hil(\x01" "1-?BREAK\xfb\\(dog:-\xba" "d:";
    sdw_prompt_pieces pp;
    sdw_error err = {0};
    ASSERT_OK(sdw_prompt_parse(crash, &pp, &err), &err);
    size_t n = 0;
    for (int i = 0; i < pp.n; i++) n += strlen(pp.v[i].text);
    sdw_prompt_pieces_free(&pp);
    ASSERT_TRUE(n < sizeof crash);
    CHECK("\xaf BREAK x", {"\xaf", 1.0}, {NULL, 0}, {"x", 1.0});
}

static void test_plain_text(void) {
    sdw_prompt_pieces pp;
    sdw_error err = {0};
    ASSERT_OK(sdw_prompt_parse("a (red:1.2) cat BREAK [on] a mat", &pp, &err), &err);
    char *t = sdw_prompt_pieces_text(&pp);
    sdw_prompt_pieces_free(&pp);
    ASSERT_TRUE(!strcmp(t, "a red cat on a mat"));
    free(t);
}

/* EmphasisOriginal: z * m, rescaled to the mean before. Expected values from the rule. */
static void test_emphasis(void) {
    enum { L = 3, W = 4 };
    float z[L * W], ref[L * W];
    const float m[L] = {1.0f, 1.5f, 0.5f};
    double before = 0, after = 0;
    for (int i = 0; i < L * W; i++) {
        z[i] = (float)(0.25 * i - 1.0 + 0.1 * (i % 3));
        before += z[i];
        after += (double)z[i] * m[i / W];
    }
    for (int i = 0; i < L * W; i++) ref[i] = (float)(z[i] * m[i / W] * (before / after));
    sdw_error err = {0};
    ASSERT_OK(sdw_emphasis_apply(z, L, W, m, &err), &err);
    ASSERT_CLOSE_REL(z, ref, L * W, 1e-6, "emphasis");
    double mean = 0;
    for (int i = 0; i < L * W; i++) mean += z[i];
    ASSERT_TRUE(fabs(mean - before) < 1e-5 * L * W);
    /* all ones: untouched, bit for bit */
    float y[L * W], y0[L * W];
    for (int i = 0; i < L * W; i++) y[i] = y0[i] = z[i];
    const float ones[L] = {1, 1, 1};
    ASSERT_OK(sdw_emphasis_apply(y, L, W, ones, &err), &err);
    ASSERT_TRUE(!memcmp(y, y0, sizeof y));
    /* a weighted mean of zero cannot be rescaled: an error, z untouched */
    float zz[2] = {1.0f, 1.0f};
    const float mz[2] = {1.0f, -1.0f};
    ASSERT_STATUS(sdw_emphasis_apply(zz, 2, 1, mz, &err), SDW_E_INVALID_ARG);
    ASSERT_TRUE(zz[0] == 1.0f && zz[1] == 1.0f);
}

int main(void) {
    RUN(test_a1111_doctests);
    RUN(test_weights);
    RUN(test_text_markup);
    RUN(test_break);
    RUN(test_bad_weight);
    RUN(test_not_utf8);
    RUN(test_plain_text);
    RUN(test_emphasis);
    return sdw_test_finish();
}
