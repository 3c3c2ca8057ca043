// The LSTM recurrence of one layer (all directions at once), forward and backward, in C++.
//
// model/fused.py holds the same algorithm in Python and torch ops and uses this file when it
// can be compiled (model/kernels.py builds it once per machine). Per step the Python loop
// makes ~10 small torch calls for the pointwise work, each a few microseconds of dispatch on
// 32 x 256 floats, plus the interpreter's own time; here the loop is C++ and the pointwise
// work is one pass over the data, split over torch's threads by batch row. The matmuls are
// torch's: in training the same addmm on a weight transposed once as on the Python path; in
// inference (one team of threads, see lstm_inference) oneDNN's call on a weight packed once.
//
// Equations (gate order [i, f, o, ~C], as in LSTMCell), with a_t = W x_t + U h_{t-1} + b:
//   i, f, o = s(a_i), s(a_f), s(a_o);  g = tanh(a_c)  (s: the logistic sigmoid)
//   C_t = f * C_{t-1} + i * g;          h_t = o * tanh(C_t)
// Backward, given dh_t and dC (from above and from step t+1):
//   dC += dh * o * (1 - tanh(C_t)^2);  do = dh * tanh(C_t)
//   di = dC * g;  df = dC * C_{t-1};   dg = dC * i
//   da = [di i(1-i), df f(1-f), do o(1-o), dg (1-g^2)]
//   dC_{t-1} = dC * f;                 dh_{t-1} = da U
//
// Shapes: D directions, T steps, B batch rows, H hidden units, G = 4H. Everything is float32
// on the CPU, each tensor's last dimension contiguous.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <utility>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

// Compiled with -ffast-math, GCC turns these into glibc's vector exp (libmvec) in the
// `omp simd` loops below. -ffast-math also assumes no infinities, so exp must never overflow:
// its argument is capped at 80 (e^80 ~ 5.5e34 < FLT_MAX), which changes σ by less than 1e-34.
// Uncapped, tanh_(C) = 2σ(2C) − 1 gave NaN once |C_t| passed ~44.
inline float sigmoid(float x) { return 1.f / (1.f + std::exp(std::min(-x, 80.f))); }
inline float tanh_(float x) { return 2.f * sigmoid(2.f * x) - 1.f; }

// Row b of a (B, K) tensor.
inline float* row(const Tensor& tensor, int64_t b) { return tensor.data_ptr<float>() + b * tensor.stride(0); }

// added + x W^T (+ bias) for x (B, K), added (B, N): W (N, K) packed for oneDNN by
// torch.ops.mkldnn._reorder_linear_weight (which then adds `added` as a post-op), or plain: then
// `weight` is W^T (K, N), contiguous, for MKL's addmm (one row by 128 x 512 at one thread: 3.7 us,
// 9.5 us on the transposed view W.t()), written into `added` in place (a scratch row of W x_t).
Tensor matmul_add(const Tensor& x, const Tensor& added, const Tensor& weight, const std::optional<Tensor>& bias,
                  bool packed) {
  if (packed) {
    using Signature = Tensor(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&,
                             std::string_view);
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("mkldnn::_linear_pointwise", "binary")
                               .typed<Signature>();
    return op.call(x, added, weight, bias, "add");
  }
  Tensor out = at::addmm_out(const_cast<Tensor&>(added), added, x, weight);  // in place: no copy of `added`
  return bias ? out.add_(*bias) : out;
}

// added (B, N) += x (B, K) W^T for few rows, in place, with W^T (K, N) given in column blocks:
// `blocks` (N / 64, K, 64) contiguous, block j holding columns [64 j, 64 j + 64). Each block of a
// row is summed over all K in four 16-float registers (GCC's vector type: one AVX-512 register
// each, two AVX2 ones) while the block streams through in order, and stored once; rows go two
// at a time, so that each vector of W loaded serves both. (On W^T as it is, rows 4N bytes
// apart, H = 256 ran from L3 at one vector FMA per ~5 cycles; written as a plain loop, GCC kept
// the sums on the stack.) MKL's addmm costs a few microseconds a call at one row of 128 x 512,
// mostly fixed cost: see fused.py's SMALL_ROWS for the measured sizes.
typedef float Lanes __attribute__((vector_size(64)));  // 16 floats
constexpr int64_t BLOCK = 64;  // columns of a block: four Lanes

inline Lanes load(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, Lanes v) { std::memcpy(p, &v, sizeof v); }

// One block for rows b0 and, when `pair`, b0 + 1: both rows' sums take each loaded vector of W.
inline void block_rows(const float* __restrict w, const float* __restrict x0, const float* __restrict x1,
                       float* out0, float* out1, int64_t K, bool pair) {
  Lanes s0 = load(out0), s1 = load(out0 + 16), s2 = load(out0 + 32), s3 = load(out0 + 48);
  if (!pair) {
    for (int64_t k = 0; k < K; ++k, w += BLOCK) {
      const float a = x0[k];
      s0 += a * load(w), s1 += a * load(w + 16), s2 += a * load(w + 32), s3 += a * load(w + 48);
    }
  } else {
    Lanes t0 = load(out1), t1 = load(out1 + 16), t2 = load(out1 + 32), t3 = load(out1 + 48);
    for (int64_t k = 0; k < K; ++k, w += BLOCK) {
      const float a = x0[k], c = x1[k];
      const Lanes w0 = load(w), w1 = load(w + 16), w2 = load(w + 32), w3 = load(w + 48);
      s0 += a * w0, s1 += a * w1, s2 += a * w2, s3 += a * w3;
      t0 += c * w0, t1 += c * w1, t2 += c * w2, t3 += c * w3;
    }
    store(out1, t0), store(out1 + 16, t1), store(out1 + 32, t2), store(out1 + 48, t3);
  }
  store(out0, s0), store(out0 + 16, s1), store(out0 + 32, s2), store(out0 + 48, s3);
}

// x: B rows of K, `x_stride` apart; added: B rows of N = 64 J, `added_stride` apart (raw rows, not
// tensors: one view per step cost ~0.7 us, as much as the product for one row of 128).
void small_matmul_add(const float* x, int64_t x_stride, float* added, int64_t added_stride, int64_t B, int64_t K,
                      const Tensor& blocks) {
  const int64_t J = blocks.size(0);
  const float* w = blocks.data_ptr<float>();
  for (int64_t b = 0; b < B; b += 2) {  // two rows per pass over W
    const bool pair = b + 1 < B;
    const float* x0 = x + b * x_stride;
    const float* x1 = pair ? x0 + x_stride : x0;
    float* a0 = added + b * added_stride;
    float* a1 = pair ? a0 + added_stride : a0;
    for (int64_t j = 0; j < J; ++j) {
      block_rows(w + j * K * BLOCK, x0, x1, a0 + j * BLOCK, a1 + j * BLOCK, K, pair);
    }
  }
}

// W (N, K) packed for oneDNN's matmul with `batch` rows (what matmul_add's `packed` expects).
Tensor reorder_linear_weight(const Tensor& weight, int64_t batch) {
  using Signature = Tensor(const Tensor&, std::optional<int64_t>);
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("mkldnn::_reorder_linear_weight", "")
                             .typed<Signature>();
  return op.call(weight, batch);
}

// One step forward, for directions d0 <= d < d1: pre[d] (B, G) -> gates [i, f, o, g] (B, G),
// C_t, tanh(C_t), h_t (B, H).
void forward_pointwise(const std::vector<Tensor>& pre, const std::vector<Tensor>& c_prev,
                       const std::vector<Tensor>& gates, const std::vector<Tensor>& c,
                       const std::vector<Tensor>& tanh_c, const std::vector<Tensor>& h, int64_t d0, int64_t d1) {
  const int64_t B = c[0].size(0), H = c[0].size(1);
  at::parallel_for(d0 * B, d1 * B, 8, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t d = n / B, b = n % B;
      const float *__restrict a = row(pre[d], b), *__restrict cp = row(c_prev[d], b);
      float *__restrict gr = row(gates[d], b), *__restrict cr = row(c[d], b);
      float *__restrict tr = row(tanh_c[d], b), *__restrict hr = row(h[d], b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = sigmoid(a[j]), f = sigmoid(a[H + j]), o = sigmoid(a[2 * H + j]);
        const float g = tanh_(a[3 * H + j]);
        const float cn = f * cp[j] + i * g, tc = tanh_(cn);
        gr[j] = i, gr[H + j] = f, gr[2 * H + j] = o, gr[3 * H + j] = g;
        cr[j] = cn, tr[j] = tc, hr[j] = o * tc;
      }
    }
  });
}

// One step backward, for directions d0 <= d < d1: dh[d], dc[d] (B, H) and the step's saved
// values -> da (B, G); dc[d] becomes dC_{t-1}, plus grad_c_prev[d] when there is one.
void backward_pointwise(const std::vector<Tensor>& dh, const std::vector<Tensor>& dc,
                        const std::vector<Tensor>& gates, const std::vector<Tensor>& tanh_c,
                        const std::vector<Tensor>& c_prev, const std::vector<Tensor>& grad_c_prev,
                        const std::vector<Tensor>& grad_pre, int64_t d0, int64_t d1) {
  const int64_t B = dc[0].size(0), H = dc[0].size(1);
  at::parallel_for(d0 * B, d1 * B, 8, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t d = n / B, b = n % B;
      const float *__restrict dhr = row(dh[d], b), *__restrict gr = row(gates[d], b);
      const float *__restrict tr = row(tanh_c[d], b), *__restrict cp = row(c_prev[d], b);
      float *__restrict dcr = row(dc[d], b), *__restrict out = row(grad_pre[d], b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = gr[j], f = gr[H + j], o = gr[2 * H + j], g = gr[3 * H + j], tc = tr[j];
        const float dct = dcr[j] + dhr[j] * o * (1.f - tc * tc);
        out[j] = dct * g * i * (1.f - i);
        out[H + j] = dct * cp[j] * f * (1.f - f);
        out[2 * H + j] = dhr[j] * tc * o * (1.f - o);
        out[3 * H + j] = dct * i * (1.f - g * g);
        dcr[j] = dct * f;
      }
      if (!grad_c_prev.empty()) {
        const float* __restrict add = row(grad_c_prev[d], b);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dcr[j] += add[j];
      }
    }
  });
}

// [t][d] views of a (D, T, B, K) tensor, made once: indexing inside the loop costs a call each.
std::vector<std::vector<Tensor>> steps_of(const Tensor& tensor) {
  std::vector<std::vector<Tensor>> steps;
  for (const Tensor& step : tensor.unbind(1)) steps.push_back(step.unbind(0));
  return steps;
}

// body(d0, d1) over all D directions. With two directions and two threads or more, each thread
// runs whole directions (their matmuls and pointwise work then single-threaded): a direction's
// weights stay in its core's cache, where stepping both directions on both threads makes each
// core read both directions' weights every step.
template <typename Body>
void over_directions(int64_t D, const Body& body) {
  if (D > 1 && at::get_num_threads() > 1) {
    const at::ThreadLocalState state;  // grad and inference mode, carried into the other thread
    at::parallel_for(0, D, 1, [&](int64_t d0, int64_t d1) {
      const at::ThreadLocalStateGuard guard(state);
      body(d0, d1);
    });
  } else {
    body(0, D);
  }
}

void check_float(const Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat, name, ": CPU float32 only");
}

// D weights (N, K) -> D x W^T (K, N), each contiguous. The training loops multiply by these with
// MKL's addmm: at one thread it beats oneDNN's packed weight with the sum as a post-op at every
// size we measured, 17 vs 55 us for (16 x 128)(128 x 512) in place, 119 vs 188 us for
// (32 x 256)(256 x 1024), where addmm on the transposed view W.t() took 33 us at the first size.
std::vector<Tensor> transposed(const Tensor& weights) {
  std::vector<Tensor> out;
  for (const Tensor& weight : weights.unbind(0)) out.push_back(weight.t().contiguous());
  return out;
}

// The time loop. projected (D, C, B, G) holds W x_t for all T = C steps, or, with x (D, T, B, I)
// and weight_ih (D, I, G), it is a buffer refilled with W x_t + b for C steps at a time, to which
// each step adds U h_{t-1} in place. weight_hh (D, G, H); bias (D, G); h0, c0 (D, B, H). Returns hs, cs
// (D, T+1, B, H) with h0, C0 first, and, when keep_gates, the activations (D, T, B, G) and
// tanh(C_t) (D, T, B, H).
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward(const Tensor& projected, const std::optional<Tensor>& x,
                                                        const std::optional<Tensor>& weight_ih,
                                                        const Tensor& weight_hh, const Tensor& bias,
                                                        const Tensor& h0, const Tensor& c0, bool keep_gates) {
  const int64_t D = projected.size(0), C = projected.size(1), B = projected.size(2), G = projected.size(3);
  const int64_t H = G / 4, T = x ? x->size(1) : C;
  check_float(projected, "projected"), check_float(h0, "h0"), check_float(c0, "c0");
  TORCH_CHECK(projected.is_contiguous() && weight_hh.sizes() == at::IntArrayRef({D, G, H}), "projected, weight_hh");
  TORCH_CHECK(h0.sizes() == c0.sizes() && h0.size(0) == D && h0.size(1) == B && h0.size(2) == H, "h0, c0: (D, B, H)");
  Tensor hs = at::empty({D, T + 1, B, H}, projected.options()), cs = at::empty_like(hs);
  hs.select(1, 0).copy_(h0), cs.select(1, 0).copy_(c0);
  const int64_t kept = keep_gates ? T : 1;  // without backward one reused buffer stays in cache
  Tensor gates = at::empty({D, kept, B, G}, projected.options());
  Tensor tanh_cs = at::empty({D, kept, B, H}, projected.options());
  const auto h_steps = steps_of(hs), c_steps = steps_of(cs), gate_steps = steps_of(gates);
  const auto tanh_steps = steps_of(tanh_cs), inputs = steps_of(projected);
  const std::vector<Tensor> biases = bias.unbind(0), weights_t = transposed(weight_hh);  // D x U^T (H, G)
  const std::vector<Tensor> buffers = projected.unbind(0);  // D x (C, B, G)
  const std::vector<Tensor> xs = x ? x->unbind(0) : std::vector<Tensor>(), ws = x ? weight_ih->unbind(0) : xs;
  std::vector<Tensor> pre(D);
  over_directions(D, [&](int64_t d0, int64_t d1) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t s = keep_gates ? t : 0, k = t % C;
      for (int64_t d = d0; d < d1; ++d) {
        if (x && k == 0) {  // W x_t + b for the next C steps, written into the buffer
          const int64_t n = std::min(T - t, C);
          Tensor out = buffers[d].narrow(0, 0, n).view({n * B, G});
          at::addmm_out(out, biases[d], xs[d].narrow(0, t, n).reshape({n * B, xs[d].size(2)}), ws[d]);
        }
        // a_t = (W x_t + b) + U h_{t-1}: in our buffer in place, else (the caller's W x_t) into a new tensor
        pre[d] = x ? inputs[k][d].addmm_(h_steps[t][d], weights_t[d])
                   : at::addmm(inputs[k][d], h_steps[t][d], weights_t[d]).add_(biases[d]);
      }
      forward_pointwise(pre, c_steps[t], gate_steps[s], c_steps[t + 1], tanh_steps[s], h_steps[t + 1], d0, d1);
    }
  });
  return {hs, cs, gates, tanh_cs};
}

// Inference for a whole layer, without the buffers autograd needs, as one team of threads
// that stays together for all T steps. Each thread owns whole directions or a slice of the
// hidden units of one direction (its rows of W and U, packed once, stay in its core's cache);
// per step it projects its inputs (every C steps), does its matmul and pointwise work, writes
// its part of h_t and C_t, and meets the others at one barrier: the next step's matmul reads
// all of h_t. h and C live in two alternating (D, B, H) slots. Each h_t goes straight into out
// (B, T, D*H) at the position the row reads it from (direction 1 reads each row backwards
// within its length), zeros past a row's length.
//
// x (D, T, B, I) time major, weight_ih (D, G, I), weight_hh (D, G, H), bias (D, G), h0 and c0
// (D, B, H), lengths (B,) or absent. Returns out and each row's final h and C (D, B, H), taken
// at step length-1 (h0 and C0 for an empty row).
struct Slice {  // one thread's share: hidden units [begin, end) of direction d
  int64_t d, begin, end;
};

std::vector<Slice> slices_of(int64_t thread, int64_t threads, int64_t D, int64_t H) {
  if (threads < D) {  // one thread does everything
    std::vector<Slice> all;
    for (int64_t d = 0; d < D; ++d) all.push_back({d, 0, H});
    return all;
  }
  const int64_t per = threads / D, d = thread / per, part = thread % per;  // `per` threads a direction
  if (d >= D) return {};  // a spare thread (threads not a multiple of D)
  const int64_t begin = H * part / per, end = H * (part + 1) / per;
  return begin < end ? std::vector<Slice>{{d, begin, end}} : std::vector<Slice>{};
}

std::tuple<Tensor, Tensor, Tensor> lstm_inference(const Tensor& x, const Tensor& weight_ih, const Tensor& weight_hh,
                                                  const Tensor& bias, const Tensor& h0, const Tensor& c0,
                                                  const std::optional<Tensor>& lengths, bool pack, int64_t chunk,
                                                  const std::optional<Tensor>& weight_hh_t,
                                                  const std::optional<Tensor>& weight_hh_blocks) {
  const int64_t D = x.size(0), T = x.size(1), B = x.size(2), I = x.size(3), G = weight_hh.size(1), H = G / 4;
  for (const auto& [tensor, name] : {std::pair{x, "x"}, {weight_ih, "weight_ih"}, {weight_hh, "weight_hh"},
                                     {bias, "bias"}, {h0, "h0"}, {c0, "c0"}}) {
    check_float(tensor, name);
  }
  TORCH_CHECK(weight_ih.sizes() == at::IntArrayRef({D, G, I}) && weight_hh.sizes() == at::IntArrayRef({D, G, H}) &&
                  bias.sizes() == at::IntArrayRef({D, G}),
              "weights: (D, 4H, I), (D, 4H, H), (D, 4H)");
  TORCH_CHECK(h0.sizes() == at::IntArrayRef({D, B, H}) && c0.sizes() == h0.sizes(), "h0, c0: (D, B, H)");
  TORCH_CHECK(chunk > 0, "chunk > 0");
  TORCH_CHECK(!weight_hh_t || (weight_hh_t->sizes() == at::IntArrayRef({D, H, G}) && weight_hh_t->is_contiguous() &&
                               weight_hh_t->scalar_type() == at::kFloat && weight_hh_t->device().is_cpu()),
              "weight_hh_t: contiguous (D, H, 4H) CPU float32");
  const bool small = weight_hh_blocks.has_value();  // few rows: small_matmul_add on the blocks
  TORCH_CHECK(!small || (weight_hh_blocks->sizes() == at::IntArrayRef({D, G / BLOCK, H, BLOCK}) && G % BLOCK == 0 &&
                         weight_hh_blocks->is_contiguous() && weight_hh_blocks->scalar_type() == at::kFloat &&
                         weight_hh_blocks->device().is_cpu()),
              "weight_hh_blocks: contiguous (D, 4H / 64, H, 64) CPU float32");
  TORCH_CHECK(!(pack && small), "pack, weight_hh_blocks: one matmul or the other");
  std::vector<int64_t> length(B, T);
  if (lengths) {
    TORCH_CHECK(lengths->dim() == 1 && lengths->size(0) == B && lengths->device().is_cpu(), "lengths: (B,) on CPU");
    const Tensor as_long = lengths->to(at::kLong).contiguous();
    for (int64_t b = 0; b < B; ++b) length[b] = std::clamp<int64_t>(as_long.data_ptr<int64_t>()[b], 0, T);
  }
  const Tensor xs = x.contiguous();
  Tensor out = at::empty({B, T, D * H}, x.options());
  Tensor h_n = h0.clone().contiguous(), c_n = c0.clone().contiguous();  // rows of length 0 keep these
  float *out_data = out.data_ptr<float>(), *h_n_data = h_n.data_ptr<float>(), *c_n_data = c_n.data_ptr<float>();
  Tensor hs = at::empty({2, D, B, H}, x.options()), cs = at::empty_like(hs);
  hs[0].copy_(h0), cs[0].copy_(c0);
  const std::vector<std::vector<Tensor>> h_slots = {hs[0].unbind(0), hs[1].unbind(0)};  // [slot][d] (B, H)
  const std::vector<std::vector<Tensor>> c_slots = {cs[0].unbind(0), cs[1].unbind(0)};
  const std::vector<Tensor> x_rows = xs.unbind(0);
  const at::ThreadLocalState state;  // grad and inference mode, carried into the team's threads
  const int64_t C = std::max<int64_t>(1, std::min(chunk, T));
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  const int64_t wanted = at::in_parallel_region() ? 1 : at::get_num_threads();
#pragma omp parallel num_threads(wanted)
  {
    const at::ThreadLocalStateGuard guard(state);
    const std::vector<Slice> mine = slices_of(omp_get_thread_num(), omp_get_num_threads(), D, H);
    struct Work {  // per slice: its rows of W, U and b, and its projection buffer (C, B, 4 units)
      Slice slice;
      Tensor w, u, b, buffer;
      bool small;  // u is U^T in column blocks, for small_matmul_add
    };
    std::vector<Work> work;
    // any failure (there should be none after the checks above) is kept and re-thrown after the
    // team ends; every thread still reaches every barrier, so none waits forever
    auto guarded = [&](auto&& body) {
      if (failed) return;
      try {
        body();
      } catch (...) {
#pragma omp critical(gatesum_lstm_error)
        if (!error) error = std::current_exception();
        failed = true;
      }
    };
    guarded([&] {
      for (const Slice& slice : mine) {
        const int64_t units = slice.end - slice.begin;
        // rows [q*H + begin, q*H + end) of each gate q: this slice's [i, f, o, ~C]
        // (a thread with all H units of its direction takes the weights as they are)
        auto own = [&](const Tensor& weight) {
          if (units == H) return weight[slice.d];
          const Tensor rows = (at::arange(units, at::kLong).unsqueeze(0) + slice.begin +
                               at::arange(4, at::kLong).unsqueeze(1) * H).flatten();
          return weight[slice.d].index_select(0, rows);
        };
        // packed U, U^T (H, 4 units) or U^T's column blocks: the caller's when it has all H units
        const bool blocked = small && (4 * units) % BLOCK == 0;  // else (a thread's odd slice) addmm
        Tensor u;
        if (blocked && units == H) {
          u = (*weight_hh_blocks)[slice.d];
        } else if (blocked) {
          u = own(weight_hh).t().reshape({H, 4 * units / BLOCK, BLOCK}).transpose(0, 1).contiguous();
        } else if (!pack && units == H && weight_hh_t) {
          u = (*weight_hh_t)[slice.d];
        } else {
          u = own(weight_hh).contiguous();
          u = pack ? reorder_linear_weight(u, B) : u.t().contiguous();
        }
        Tensor buffer = at::empty({C, B, 4 * units}, x.options());
        work.push_back({slice, own(weight_ih).t(), u, own(bias), buffer, blocked});
      }
    });
    for (int64_t t = 0; t < T; ++t) {
      const int64_t k = t % C, now = t % 2, next = 1 - now;
      guarded([&] {
        for (Work& item : work) {
          const auto [d, begin, end] = item.slice;
          const int64_t units = end - begin;
          if (k == 0) {  // W x_t for the next C steps, written into the buffer
            const int64_t n = std::min(T - t, C);
            Tensor rows = item.buffer.narrow(0, 0, n).view({n * B, 4 * units});
            at::mm_out(rows, x_rows[d].narrow(0, t, n).reshape({n * B, I}), item.w);
            if (!pack) rows.add_(item.b);  // b once per chunk; oneDNN adds it in its call instead
          }
          const std::optional<Tensor> bias = pack ? std::optional<Tensor>(item.b) : std::nullopt;  // else in W x_t
          // a_t (B, 4 units), row b at pre_data + b * pre_stride: W x_t + b, plus U h_{t-1} here
          const float* pre_data;
          int64_t pre_stride = 4 * units;
          Tensor a;
          if (item.small) {
            float* projected = item.buffer.data_ptr<float>() + k * B * 4 * units;
            small_matmul_add(h_slots[now][d].data_ptr<float>(), H, projected, 4 * units, B, H, item.u);
            pre_data = projected;
          } else {
            a = matmul_add(h_slots[now][d], item.buffer[k], item.u, bias, pack);
            pre_data = a.data_ptr<float>(), pre_stride = a.stride(0);
          }
          const float* c_now = c_slots[now][d].data_ptr<float>() + begin;
          float *c_next = c_slots[next][d].data_ptr<float>() + begin, *h_next = h_slots[next][d].data_ptr<float>() + begin;
          for (int64_t b = 0; b < B; ++b) {
            const float* __restrict pre = pre_data + b * pre_stride;
            const float* __restrict c_prev = c_now + b * H;
            float *__restrict c = c_next + b * H, *__restrict h = h_next + b * H;
#pragma omp simd
            for (int64_t j = 0; j < units; ++j) {
              const float i = sigmoid(pre[j]), f = sigmoid(pre[units + j]), o = sigmoid(pre[2 * units + j]);
              c[j] = f * c_prev[j] + i * tanh_(pre[3 * units + j]);
              h[j] = o * tanh_(c[j]);
            }
            const bool real = t < length[b];
            const int64_t position = d == 1 && real ? length[b] - 1 - t : t;
            float* target = out_data + (b * T + position) * D * H + d * H + begin;
            if (real) {
              std::copy_n(h, units, target);
            } else {
              std::fill_n(target, units, 0.f);
            }
            if (t == length[b] - 1) {  // the row's final state
              std::copy_n(h, units, h_n_data + (d * B + b) * H + begin);
              std::copy_n(c, units, c_n_data + (d * B + b) * H + begin);
            }
          }
        }
      });
#pragma omp barrier
    }
  }
  if (error) std::rethrow_exception(error);
  return {out, h_n, c_n};
}

// Rows b that end at step t, for every t: the steps where each row's final-state gradient enters.
std::vector<std::vector<int64_t>> rows_ending(const Tensor& last, int64_t T) {
  TORCH_CHECK(last.device().is_cpu() && last.scalar_type() == at::kLong && last.dim() == 1, "last: CPU int64 (B,)");
  std::vector<std::vector<int64_t>> rows(T);
  const Tensor steps = last.contiguous();
  const int64_t* step = steps.data_ptr<int64_t>();
  for (int64_t b = 0; b < steps.size(0); ++b) {
    TORCH_CHECK(step[b] >= 0 && step[b] < T, "last: a step in [0, T)");
    rows[step[b]].push_back(b);
  }
  return rows;
}

// to[b] += from[b] (H floats each) for the given rows of two (B, H) tensors with unit stride in H.
void add_rows(const Tensor& to, const Tensor& from, const std::vector<int64_t>& rows) {
  const int64_t H = to.size(1);
  for (const int64_t b : rows) {
    float* __restrict out = row(to, b);
    const float* __restrict add = row(from, b);
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) out[j] += add[j];
  }
}

// Backward through the loop. weight_hh (D, G, H); cs (D, T+1, B, H), gates, tanh_cs from lstm_forward; grad_hs, grad_cs (D, T, B, H) or
// absent; grad_h_n, grad_c_n (D, B, H) or absent: the gradients of each row's final state, taken after
// step last[b] (last (B,) int64, needed with them). Each enters the loop at its row's own step, so no
// caller has to scatter it into a zero-filled (D, T, B, H) gradient first.
// Returns da (D, T, B, G) for every step, dh_0 and dC_0 (D, B, H).
std::tuple<Tensor, Tensor, Tensor> lstm_backward(const Tensor& weight_hh, const Tensor& cs,
                                                 const Tensor& gates, const Tensor& tanh_cs,
                                                 const std::optional<Tensor>& grad_hs,
                                                 const std::optional<Tensor>& grad_cs,
                                                 const std::optional<Tensor>& grad_h_n,
                                                 const std::optional<Tensor>& grad_c_n,
                                                 const std::optional<Tensor>& last) {
  const int64_t D = gates.size(0), T = gates.size(1), B = gates.size(2), G = gates.size(3), H = G / 4;
  check_float(gates, "gates");
  for (const auto& grad : {grad_hs, grad_cs}) {
    TORCH_CHECK(!grad || (grad->is_contiguous() && grad->sizes() == tanh_cs.sizes()), "grads: (D, T, B, H)");
  }
  for (const auto& grad : {grad_h_n, grad_c_n}) {
    TORCH_CHECK(!grad || (grad->is_contiguous() && grad->sizes() == cs.select(1, 0).sizes()), "final grads: (D, B, H)");
  }
  const bool finals = grad_h_n || grad_c_n;
  TORCH_CHECK(!finals || last, "final-state grads need last");
  const auto ending = finals ? rows_ending(*last, T) : std::vector<std::vector<int64_t>>();
  const std::vector<Tensor> grad_h_last = grad_h_n ? grad_h_n->unbind(0) : std::vector<Tensor>();
  const std::vector<Tensor> grad_c_last = grad_c_n ? grad_c_n->unbind(0) : std::vector<Tensor>();
  const std::vector<Tensor> weights = weight_hh.contiguous().unbind(0);  // D x U (G, H)
  Tensor grad_a = at::empty_like(gates);
  Tensor dc = grad_cs ? grad_cs->select(1, T - 1).clone() : at::zeros({D, B, H}, gates.options());
  const Tensor zero = at::zeros({B, H}, gates.options());
  const auto gate_steps = steps_of(gates), tanh_steps = steps_of(tanh_cs), c_steps = steps_of(cs);
  const auto grad_steps = steps_of(grad_a);
  const auto grad_h = grad_hs ? steps_of(*grad_hs) : std::vector<std::vector<Tensor>>();
  const auto grad_c = grad_cs ? steps_of(*grad_cs) : std::vector<std::vector<Tensor>>();
  const std::vector<Tensor> dcs = dc.unbind(0);
  std::vector<Tensor> dh = grad_hs ? grad_h[T - 1] : std::vector<Tensor>(D, zero);
  if (grad_h_n) {  // dh_{T-1} gets rows added in place: our own copy, not the caller's gradient or `zero`
    for (Tensor& grad : dh) grad = grad.clone();
  }
  const std::vector<Tensor> none;
  over_directions(D, [&](int64_t d0, int64_t d1) {
    for (int64_t t = T - 1; t >= 0; --t) {
      if (finals && !ending[t].empty()) {  // the final states of the rows that end here
        for (int64_t d = d0; d < d1; ++d) {
          if (grad_h_n) add_rows(dh[d], grad_h_last[d], ending[t]);
          if (grad_c_n) add_rows(dcs[d], grad_c_last[d], ending[t]);
        }
      }
      // c_steps[t] is C_{t-1}: cs starts with C_0
      const auto& grad_c_prev = grad_cs && t > 0 ? grad_c[t - 1] : none;
      backward_pointwise(dh, dcs, gate_steps[t], tanh_steps[t], c_steps[t], grad_c_prev, grad_steps[t], d0, d1);
      for (int64_t d = d0; d < d1; ++d) {  // dh_{t-1} = da_t U + the gradient from the output at t-1
        const Tensor& added = grad_hs && t > 0 ? grad_h[t - 1][d] : zero;
        dh[d] = at::addmm(added, grad_steps[t][d], weights[d]);
      }
    }
  });
  return {grad_a, at::stack(dh), dc};
}

}  // namespace

TORCH_LIBRARY(gatesum, m) {
  m.def("lstm_forward(Tensor(a!) projected, Tensor? x, Tensor? weight_ih, Tensor weight_hh, Tensor bias, "
        "Tensor h0, Tensor c0, bool keep_gates) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("lstm_backward(Tensor weight_hh, Tensor cs, Tensor gates, Tensor tanh_cs, "
        "Tensor? grad_hs, Tensor? grad_cs, Tensor? grad_h_n, Tensor? grad_c_n, Tensor? last) -> (Tensor, Tensor, Tensor)");
  m.def("lstm_inference(Tensor x, Tensor weight_ih, Tensor weight_hh, Tensor bias, Tensor h0, Tensor c0, "
        "Tensor? lengths, bool pack, int chunk, Tensor? weight_hh_t=None, Tensor? weight_hh_blocks=None) "
        "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(gatesum, CPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
  m.impl("lstm_inference", &lstm_inference);
}

