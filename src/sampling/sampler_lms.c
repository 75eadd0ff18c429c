/* sampling/sampler_lms.c — linear multistep (LMS): diffusers 0.25.1 LMSDiscreteScheduler with
 * its default order 4. The update is x += sum_k c_k · d_{-k}: the last derivatives
 * d = (x − x0) / sigma weighted by the integrals c_k over the step [sigma_i, sigma_{i+1}] of the
 * Lagrange basis polynomials through the last sigmas.
 *
 * The coefficients, as diffusers gets them: scipy.integrate.quad(lms_derivative, sigma_i,
 * sigma_{i+1}, epsrel=1e-4), where lms_derivative multiplies 0-dim float32 torch tensors — so
 * the integrand is the Lagrange polynomial evaluated in float32 (tau rounded to float32 first,
 * every difference, quotient and product rounded), and quad (QUADPACK dqagse, scipy 1.10)
 * returns the 21-point Gauss-Kronrod sum of those float32 values whenever its first error
 * estimate passes, which it does for every schedule of up to 500 steps (checked against scipy
 * for SD's schedules, all spacings, Karras on and off). The coefficient is then rounded to
 * float32 where it multiplies the derivative tensor. An exact integral of the ideal polynomial
 * differs from quad's sum by the float32 noise of the integrand (~1e-7 relative), enough to
 * move the float32 coefficient by an ulp, so we reproduce QUADPACK's dqk21 sum instead: the same
 * nodes, weights and double-precision summation order. Where quad would subdivide (steps close
 * to num_train_timesteps, where adjacent sigmas nearly coincide), we return the exact integral
 * of the polynomial (Gauss-Legendre, exact for its degree), which agrees with quad's adaptive
 * result within its error bound but not necessarily to the last float32 bit. */
#include "sampling/sampler_impl.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define LMS_ORDER 4 /* LMSDiscreteScheduler.step's default `order` */

/* ---- the integrand ---- */

typedef struct lagrange {
    const float *sigmas; /* the schedule (float32, as diffusers' tensor) */
    int t, order, cur;   /* basis polynomial `cur` through sigmas[t - k], k < order */
} lagrange;

/* lms_derivative(tau) as torch evaluates it: tau (a Python float) meets 0-dim float32 tensors,
 * so it is rounded to float32 and each operation rounds to float32. */
static double lagrange_f32(const lagrange *l, double tau) {
    if (l->order == 1) return 1.0; /* the Python float 1.0: no factor multiplies it */
    const float x = (float)tau;
    const float sc = l->sigmas[l->t - l->cur];
    float prod = 1.0f;
    for (int k = 0; k < l->order; k++) {
        if (k == l->cur) continue;
        const float sk = l->sigmas[l->t - k];
        prod = prod * ((x - sk) / (sc - sk));
    }
    return prod;
}

/* The same polynomial in double (the ideal integrand, for the exact fallback). */
static double lagrange_f64(const lagrange *l, double tau) {
    double prod = 1.0;
    const double sc = l->sigmas[l->t - l->cur];
    for (int k = 0; k < l->order; k++) {
        if (k == l->cur) continue;
        const double sk = l->sigmas[l->t - k];
        prod *= (tau - sk) / (sc - sk);
    }
    return prod;
}

/* ---- QUADPACK dqk21 and dqagse's first acceptance test (scipy 1.10's Fortran) ---- */

/* 21-point Kronrod abscissae on (-1, 1) (positive half; the even ones, 1-based, are the 10-point
 * Gauss nodes) and weights, and the 10-point Gauss weights: QUADPACK's decimal constants
 * (Fullerton, 1981), which round to these doubles. */
static const double k_xgk[11] = {
    0.995657163025808080735527280689003, 0.973906528517171720077964012084452,
    0.930157491355708226001207180059508, 0.865063366688984510732096688423493,
    0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
    0.562757134668604683339000099272694, 0.433395394129247190799265943165784,
    0.294392862701460198131126603103866, 0.148874338981631210884826001129720,
    0.0};
static const double k_wgk[11] = {
    0.011694638867371874278064396062192, 0.032558162307964727478818972459390,
    0.054755896574351996031381300244580, 0.075039674810919952767043140916190,
    0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
    0.123491976262065851077958109831074, 0.134709217311473325928054001771707,
    0.142775938577060080797094273138717, 0.147739104901338491374841515972068,
    0.149445554002916905664936468389821};
static const double k_wg[5] = {
    0.066671344308688137593568809893332, 0.149451349150580593145776339657697,
    0.219086362515982043995534934228163, 0.269266719309996355091226921569469,
    0.295524224714752870173892994651338};

typedef struct qk21_result {
    double result, abserr, resabs, resasc;
} qk21_result;

/* dqk21 over (a, b) (b < a allowed: hlgth is then negative), in its operation order. */
static qk21_result qk21(const lagrange *l, double a, double b) {
    const double epmach = DBL_EPSILON, uflow = DBL_MIN; /* d1mach(4), d1mach(1) */
    const double centr = 0.5 * (a + b), hlgth = 0.5 * (b - a), dhlgth = fabs(hlgth);
    double fv1[10], fv2[10];
    double resg = 0.0;
    const double fc = lagrange_f32(l, centr);
    double resk = k_wgk[10] * fc;
    double resabs = fabs(resk);
    for (int j = 1; j <= 5; j++) { /* the Gauss nodes: xgk(2j), 1-based */
        const int jtw = 2 * j - 1;
        const double absc = hlgth * k_xgk[jtw];
        const double f1 = lagrange_f32(l, centr - absc), f2 = lagrange_f32(l, centr + absc);
        fv1[jtw] = f1;
        fv2[jtw] = f2;
        const double fsum = f1 + f2;
        resg = resg + k_wg[j - 1] * fsum;
        resk = resk + k_wgk[jtw] * fsum;
        resabs = resabs + k_wgk[jtw] * (fabs(f1) + fabs(f2));
    }
    for (int j = 1; j <= 5; j++) { /* the Kronrod extension: xgk(2j - 1) */
        const int jtwm1 = 2 * j - 2;
        const double absc = hlgth * k_xgk[jtwm1];
        const double f1 = lagrange_f32(l, centr - absc), f2 = lagrange_f32(l, centr + absc);
        fv1[jtwm1] = f1;
        fv2[jtwm1] = f2;
        const double fsum = f1 + f2;
        resk = resk + k_wgk[jtwm1] * fsum;
        resabs = resabs + k_wgk[jtwm1] * (fabs(f1) + fabs(f2));
    }
    const double reskh = resk * 0.5;
    double resasc = k_wgk[10] * fabs(fc - reskh);
    for (int j = 0; j < 10; j++)
        resasc = resasc + k_wgk[j] * (fabs(fv1[j] - reskh) + fabs(fv2[j] - reskh));
    qk21_result r;
    r.result = resk * hlgth;
    r.resabs = resabs * dhlgth;
    r.resasc = resasc * dhlgth;
    r.abserr = fabs((resk - resg) * hlgth);
    if (r.resasc != 0.0 && r.abserr != 0.0)
        r.abserr = r.resasc * fmin(1.0, pow(200.0 * r.abserr / r.resasc, 1.5));
    if (r.resabs > uflow / (50.0 * epmach)) r.abserr = fmax((epmach * 50.0) * r.resabs, r.abserr);
    return r;
}

/* Gauss-Legendre with 3 nodes is exact for degree <= 5; the basis polynomials have degree 3. */
static double exact_integral(const lagrange *l, double a, double b) {
    static const double x[3] = {-0.774596669241483377035853079956480, 0.0,
                                0.774596669241483377035853079956480};
    static const double w[3] = {0.555555555555555555555555555555556,
                                0.888888888888888888888888888888889,
                                0.555555555555555555555555555555556};
    const double c = 0.5 * (a + b), h = 0.5 * (b - a);
    double sum = 0;
    for (int k = 0; k < 3; k++)
        sum += w[k] * lagrange_f64(l, c + h * x[k]);
    return sum * h;
}

/* get_lms_coefficient(order, t, cur) = quad(lms_derivative, sigmas[t], sigmas[t + 1],
 * epsabs=1.49e-8, epsrel=1e-4)[0]. */
double sdw__lms_coefficient(const float *sigmas, int order, int t, int cur) {
    const lagrange l = {.sigmas = sigmas, .t = t, .order = order, .cur = cur};
    const double a = sigmas[t], b = sigmas[t + 1];
    const qk21_result r = qk21(&l, a, b);
    /* dqagse: done after the first rule when its error estimate meets the bound (or is 0), or
     * when roundoff is detected (ier 2). Its defabs is dqk21's resabs, its resabs dqk21's
     * resasc. */
    const double errbnd = fmax(1.49e-8, 1e-4 * fabs(r.result));
    if ((r.abserr <= errbnd && r.abserr != r.resasc) || r.abserr == 0.0) return r.result;
    if (r.abserr <= 100.0 * DBL_EPSILON * r.resabs && r.abserr > errbnd) return r.result;
    return exact_integral(&l, a, b); /* quad would subdivide; see the file comment */
}

/* ---- the sampler ---- */

static sdw_status lms_setup(sdw_sampler *s, sdw_error *err) {
    /* LMSDiscreteScheduler (0.25.1) has no rescale_betas_zero_snr: ignored, as there. */
    sdw_status st = sdw_scheduler_alphas_cumprod(&s->cfg, false, s->alphas_cumprod, err);
    if (st != SDW_OK) return st;
    double *ts, *sig;
    const int len = sdw__sigma_schedule(s, false, &ts, &sig);
    s->n_calls = len;
    s->timesteps = sdw_xmalloc((size_t)len * sizeof(float));
    s->sigmas = sdw_xmalloc((size_t)(len + 1) * sizeof(float));
    float max_sigma = 0;
    for (int k = 0; k < len; k++) {
        s->timesteps[k] = (float)ts[k];
        s->sigmas[k] = (float)sig[k];
        if (s->sigmas[k] > max_sigma) max_sigma = s->sigmas[k];
    }
    s->sigmas[len] = 0.0f;
    s->init_noise_sigma = (s->cfg.timestep_spacing == SDW_SPACING_LINSPACE ||
                           s->cfg.timestep_spacing == SDW_SPACING_TRAILING)
                              ? max_sigma
                              : sqrtf(max_sigma * max_sigma + 1.0f);
    free(ts);
    free(sig);
    return SDW_OK;
}

static int sigma_index(const sdw_sampler *s, int i) {
    const int k = i + s->sigma_offset;
    SDW_ASSERT(k >= 0 && k < s->n_calls);
    return k;
}

static void lms_scale_model_input(const sdw_sampler *s, int i, const float *x, float *out,
                                  size_t n) {
    const float sigma = s->sigmas[sigma_index(s, i)];
    const float scale = sqrtf(sigma * sigma + 1.0f);
    for (size_t k = 0; k < n; k++)
        out[k] = x[k] / scale;
}

static void lms_step(sdw_sampler *s, int i, const float *mo, float *x, size_t n, sdw_rng *rng) {
    (void)rng;
    const int si = sigma_index(s, i);
    const float sigma = s->sigmas[si];
    const float s2p1 = sigma * sigma + 1.0f;
    const float c_out = -sigma / sqrtf(s2p1);

    /* derivatives.append(d); keep the last LMS_ORDER (hist oldest first) */
    if (s->n_hist == LMS_ORDER) {
        float *oldest = s->hist[0];
        memmove(s->hist, s->hist + 1, (LMS_ORDER - 1) * sizeof s->hist[0]);
        s->hist[LMS_ORDER - 1] = oldest;
        s->n_hist--;
    }
    float *d = s->hist[s->n_hist++];
    for (size_t k = 0; k < n; k++) {
        float x0;
        switch (s->cfg.prediction_type) {
        case SDW_PRED_EPSILON:
            x0 = x[k] - sigma * mo[k];
            break;
        case SDW_PRED_SAMPLE:
            x0 = mo[k];
            break;
        default:
            x0 = mo[k] * c_out + x[k] / s2p1;
            break;
        }
        d[k] = (x[k] - x0) / sigma;
    }

    /* order = min(step_index + 1, 4) coefficients; zip() with reversed(derivatives) uses as
     * many as there are derivatives (fewer after an image-to-image start). */
    const int order = si + 1 < LMS_ORDER ? si + 1 : LMS_ORDER;
    const int used = order < s->n_hist ? order : s->n_hist;
    float c[LMS_ORDER];
    for (int k = 0; k < used; k++)
        c[k] = (float)sdw__lms_coefficient(s->sigmas, order, si, k);
    /* sample + sum(c_k * d_{-1-k}): Python's sum starts at 0 and adds left to right */
    float *acc = s->tmp;
    for (size_t j = 0; j < n; j++) {
        float sum = 0.0f + c[0] * s->hist[s->n_hist - 1][j]; /* 0 + t: -0 becomes +0 */
        for (int k = 1; k < used; k++)
            sum = sum + c[k] * s->hist[s->n_hist - 1 - k][j];
        acc[j] = sum;
    }
    for (size_t j = 0; j < n; j++)
        x[j] = x[j] + acc[j];
}

/* add_noise: x0 + noise * sigma at the (only) index holding timesteps[i]. */
static void lms_add_noise(const sdw_sampler *s, int i, const float *x0, const float *noise,
                          float *out, size_t n) {
    int idx = 0;
    while (idx < s->n_calls && s->timesteps[idx] != s->timesteps[i])
        idx++;
    const float sigma = s->sigmas[idx];
    for (size_t k = 0; k < n; k++)
        out[k] = x0[k] + noise[k] * sigma;
}

const sdw__sampler_ops sdw__sampler_lms = {
    .name = "lms",
    .diffusers_class = "LMSDiscreteScheduler",
    .default_spacing = SDW_SPACING_LINSPACE,
    .karras_ok = true,
    .setup = lms_setup,
    .step = lms_step,
    .scale_model_input = lms_scale_model_input,
    .add_noise = lms_add_noise,
};
