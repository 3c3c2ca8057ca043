// The LSTM recurrence of one layer (all directions at once), forward and backward, in C++.
//
// model/fused.py holds the same algorithm in Python and torch ops and uses this file when it
// can be compiled (model/kernels.py builds it once per machine). Per step the Python loop
// makes ~10 small torch calls for the pointwise work, each a few microseconds of dispatch on
// 32 x 256 floats, plus the interpreter's own time; here the loop is C++ and the pointwise
// work is one pass over the data, split over torch's threads by batch row. The matmuls are
// torch's: the same oneDNN call on a weight packed once (or addmm) as on the Python path.
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

#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

namespace {

using at::Tensor;

// Compiled with -ffast-math, GCC turns these into glibc's vector exp (libmvec) in the
// `omp simd` loops below.
inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }
inline float tanh_(float x) { return 2.f * sigmoid(2.f * x) - 1.f; }

// Row b of a (B, K) tensor.
inline float* row(const Tensor& tensor, int64_t b) { return tensor.data_ptr<float>() + b * tensor.stride(0); }

// added + x W^T (+ bias) for x (B, K), added (B, N): W (N, K) packed for oneDNN by
// torch.ops.mkldnn._reorder_linear_weight (which then adds `added` as a post-op), or plain.
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
  Tensor out = at::addmm(added, x, weight.t());
  return bias ? out.add_(*bias) : out;
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

// The time loop. projected (D, C, B, G) holds W x_t for all T = C steps, or, with x (D, T, B, I)
// and weight_ih (D, I, G), it is a buffer refilled with C steps at a time. weight_hh: D weights
// (G, H), packed or plain; bias (D, G); h0, c0 (D, B, H). Returns hs, cs (D, T+1, B, H) with
// h0, C0 first, and, when keep_gates, the activations (D, T, B, G) and tanh(C_t) (D, T, B, H).
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward(const Tensor& projected, const std::optional<Tensor>& x,
                                                        const std::optional<Tensor>& weight_ih,
                                                        at::TensorList weight_hh, const Tensor& bias,
                                                        const Tensor& h0, const Tensor& c0, bool packed,
                                                        bool keep_gates) {
  const int64_t D = projected.size(0), C = projected.size(1), B = projected.size(2), G = projected.size(3);
  const int64_t H = G / 4, T = x ? x->size(1) : C;
  check_float(projected, "projected"), check_float(h0, "h0"), check_float(c0, "c0");
  TORCH_CHECK(projected.is_contiguous() && static_cast<int64_t>(weight_hh.size()) == D, "projected, weight_hh");
  TORCH_CHECK(h0.sizes() == c0.sizes() && h0.size(0) == D && h0.size(1) == B && h0.size(2) == H, "h0, c0: (D, B, H)");
  Tensor hs = at::empty({D, T + 1, B, H}, projected.options()), cs = at::empty_like(hs);
  hs.select(1, 0).copy_(h0), cs.select(1, 0).copy_(c0);
  const int64_t kept = keep_gates ? T : 1;  // without backward one reused buffer stays in cache
  Tensor gates = at::empty({D, kept, B, G}, projected.options());
  Tensor tanh_cs = at::empty({D, kept, B, H}, projected.options());
  const auto h_steps = steps_of(hs), c_steps = steps_of(cs), gate_steps = steps_of(gates);
  const auto tanh_steps = steps_of(tanh_cs), inputs = steps_of(projected);
  const std::vector<Tensor> biases = bias.unbind(0);
  const std::vector<Tensor> buffers = projected.unbind(0);  // D x (C, B, G)
  const std::vector<Tensor> xs = x ? x->unbind(0) : std::vector<Tensor>(), ws = x ? weight_ih->unbind(0) : xs;
  std::vector<Tensor> pre(D);
  over_directions(D, [&](int64_t d0, int64_t d1) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t s = keep_gates ? t : 0, k = t % C;
      for (int64_t d = d0; d < d1; ++d) {
        if (x && k == 0) {  // W x_t for the next C steps, written into the buffer
          const int64_t n = std::min(T - t, C);
          Tensor out = buffers[d].narrow(0, 0, n).view({n * B, G});
          at::mm_out(out, xs[d].narrow(0, t, n).reshape({n * B, xs[d].size(2)}), ws[d]);
        }
        pre[d] = matmul_add(h_steps[t][d], inputs[k][d], weight_hh[d], biases[d], packed);
      }
      forward_pointwise(pre, c_steps[t], gate_steps[s], c_steps[t + 1], tanh_steps[s], h_steps[t + 1], d0, d1);
    }
  });
  return {hs, cs, gates, tanh_cs};
}

// Backward through the loop. weight_hh_t: D weights U^T (H, G), packed or plain; hs, cs
// (D, T+1, B, H); gates, tanh_cs from lstm_forward; grad_hs, grad_cs (D, T, B, H) or absent.
// Returns da (D, T, B, G) for every step, dh_0 and dC_0 (D, B, H).
std::tuple<Tensor, Tensor, Tensor> lstm_backward(at::TensorList weight_hh_t, bool packed, const Tensor& cs,
                                                 const Tensor& gates, const Tensor& tanh_cs,
                                                 const std::optional<Tensor>& grad_hs,
                                                 const std::optional<Tensor>& grad_cs) {
  const int64_t D = gates.size(0), T = gates.size(1), B = gates.size(2), G = gates.size(3), H = G / 4;
  check_float(gates, "gates");
  for (const auto& grad : {grad_hs, grad_cs}) {
    TORCH_CHECK(!grad || (grad->is_contiguous() && grad->sizes() == tanh_cs.sizes()), "grads: (D, T, B, H)");
  }
  Tensor grad_a = at::empty_like(gates);
  Tensor dc = grad_cs ? grad_cs->select(1, T - 1).clone() : at::zeros({D, B, H}, gates.options());
  const Tensor zero = at::zeros({B, H}, gates.options());
  const auto gate_steps = steps_of(gates), tanh_steps = steps_of(tanh_cs), c_steps = steps_of(cs);
  const auto grad_steps = steps_of(grad_a);
  const auto grad_h = grad_hs ? steps_of(*grad_hs) : std::vector<std::vector<Tensor>>();
  const auto grad_c = grad_cs ? steps_of(*grad_cs) : std::vector<std::vector<Tensor>>();
  const std::vector<Tensor> dcs = dc.unbind(0);
  std::vector<Tensor> dh = grad_hs ? grad_h[T - 1] : std::vector<Tensor>(D, zero);
  const std::vector<Tensor> none;
  over_directions(D, [&](int64_t d0, int64_t d1) {
    for (int64_t t = T - 1; t >= 0; --t) {
      // c_steps[t] is C_{t-1}: cs starts with C_0
      const auto& grad_c_prev = grad_cs && t > 0 ? grad_c[t - 1] : none;
      backward_pointwise(dh, dcs, gate_steps[t], tanh_steps[t], c_steps[t], grad_c_prev, grad_steps[t], d0, d1);
      for (int64_t d = d0; d < d1; ++d) {  // dh_{t-1} = da_t U + the gradient from the output at t-1
        const Tensor& added = grad_hs && t > 0 ? grad_h[t - 1][d] : zero;
        dh[d] = matmul_add(grad_steps[t][d], added, weight_hh_t[d], std::nullopt, packed);
      }
    }
  });
  return {grad_a, at::stack(dh), dc};
}

}  // namespace

TORCH_LIBRARY(gatesum, m) {
  m.def("lstm_forward(Tensor(a!) projected, Tensor? x, Tensor? weight_ih, Tensor[] weight_hh, Tensor bias, "
        "Tensor h0, Tensor c0, bool packed, bool keep_gates) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("lstm_backward(Tensor[] weight_hh_t, bool packed, Tensor cs, Tensor gates, Tensor tanh_cs, "
        "Tensor? grad_hs, Tensor? grad_cs) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(gatesum, CPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}

// Weights packed for oneDNN are MkldnnCPU tensors, which route the call here.
TORCH_LIBRARY_IMPL(gatesum, MkldnnCPU, m) {
  m.impl("lstm_forward", &lstm_forward);
  m.impl("lstm_backward", &lstm_backward);
}
