// The target's log-probability under the vocabulary softmax, and its gradient, in C++; and for
// decoding, one step's whole pointer-generator distribution (mixed_log_probs, at the end).
//
// model/vocabulary.py holds the same computation in torch ops and uses this file when it can
// be compiled (model/kernels.py builds it with lstm.cpp into one library). Training needs only
// log softmax(z)_y for the target y of each row, not the whole (N, V) distribution: here each
// row of logits is read twice while it sits in cache (its maximum, then the sum of exponentials)
// and nothing of size (N, V) is written. Backward overwrites the saved logits with their
// gradient in one pass, and sums the columns for the bias on the way.
//
// Equations, for a row z = x W^T + b (V,) with target y and incoming gradient g = dL/d log p_y:
//   lse = m + log Σ_v exp(z_v − m),  m = max_v z_v;    log p_y = z_y − lse
//   dL/dz_v = g (δ_vy − exp(z_v − lse))
// The logits arrive as x W^T, without the bias b (V,): it is added on the fly in both passes,
// which saves addmm's copy of b into every row of a fresh (N, V) tensor before the matmul.
//
// Shapes: N rows (B·T target positions), V vocabulary entries, contiguous on the CPU. The logits
// are float32, or bfloat16 when training asks for a bfloat16 output layer (model/vocabulary.py):
// then every sum and exponential here is still float32, and only the stored numbers are bfloat16.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using at::Tensor;

void check_rows(const Tensor& logits, const std::optional<Tensor>& bias, const Tensor& target) {
  TORCH_CHECK(logits.device().is_cpu() &&
                  (logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kBFloat16) &&
                  logits.dim() == 2 && logits.is_contiguous(),
              "logits: contiguous (N, V) CPU float32 or bfloat16");
  TORCH_CHECK(target.dim() == 1 && target.size(0) == logits.size(0) && target.scalar_type() == at::kLong &&
                  target.is_contiguous(),
              "target: (N,) int64");
  TORCH_CHECK(!bias || (bias->is_contiguous() && bias->numel() == logits.size(1) && bias->scalar_type() == at::kFloat),
              "bias: (V,) float32");
  if (target.numel() > 0) {  // checked here: an exception must not leave the threads of the loops below
    const int64_t low = target.min().item<int64_t>(), high = target.max().item<int64_t>();
    TORCH_CHECK(low >= 0 && high < logits.size(1), "target ids outside the vocabulary: ", low, "..", high);
  }
}

// The bias (V,), or zeros: the loops below then need no branch.
Tensor bias_or_zeros(const Tensor& logits, const std::optional<Tensor>& bias) {
  return bias ? *bias : at::zeros({logits.size(1)}, logits.options().dtype(at::kFloat));
}

// bfloat16 is the top half of a float32: widening is a shift; narrowing rounds to nearest even.
// Written on the bits (not c10::BFloat16's operators) so that GCC vectorizes the loops below.
inline float widen(uint16_t x) {
  const uint32_t bits = static_cast<uint32_t>(x) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

inline uint16_t narrow(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// The row loops, each its own function: inlined into the one-thread branch of at::parallel_for,
// GCC left that copy of the loop scalar (glibc's scalar expf; 4x slower, measured), while the
// copy it kept as a function was vectorized (libmvec's 16-wide expf).

// lse of one row z + b (V,). The max as a conditional, not std::max: GCC vectorizes only this.
__attribute__((noinline)) float row_lse(const float* __restrict z, const float* __restrict b, int64_t V) {
  float m = -std::numeric_limits<float>::max();
#pragma omp simd reduction(max : m)
  for (int64_t v = 0; v < V; ++v) m = z[v] + b[v] > m ? z[v] + b[v] : m;
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t v = 0; v < V; ++v) sum += std::exp(z[v] + b[v] - m);
  return m + std::log(sum);
}

// One row of dL/dz = g (δ_vy − exp(z + b − lse)) over z in place, without the δ term (the caller
// adds g at y), summed into column_sum (V,).
__attribute__((noinline)) void row_gradient(float* __restrict z, const float* __restrict b, float g, float lse,
                                            float* __restrict column_sum, int64_t V) {
#pragma omp simd
  for (int64_t v = 0; v < V; ++v) {
    z[v] = -g * std::exp(z[v] + b[v] - lse);
    column_sum[v] += z[v];
  }
}

// The same two row loops over bfloat16 logits, in float32.
__attribute__((noinline)) float row_lse(const uint16_t* __restrict z, const float* __restrict b, int64_t V) {
  float m = -std::numeric_limits<float>::max();
#pragma omp simd reduction(max : m)
  for (int64_t v = 0; v < V; ++v) m = widen(z[v]) + b[v] > m ? widen(z[v]) + b[v] : m;
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t v = 0; v < V; ++v) sum += std::exp(widen(z[v]) + b[v] - m);
  return m + std::log(sum);
}

__attribute__((noinline)) void row_gradient(uint16_t* __restrict z, const float* __restrict b, float g, float lse,
                                            float* __restrict column_sum, int64_t V) {
#pragma omp simd
  for (int64_t v = 0; v < V; ++v) {
    const float dz = -g * std::exp(widen(z[v]) + b[v] - lse);
    z[v] = narrow(dz);
    column_sum[v] += dz;
  }
}

// The row type of the logits: float for float32, uint16_t (the bits) for bfloat16.
template <typename Row>
Row* rows_of(const Tensor& logits) {
  if constexpr (std::is_same_v<Row, float>) {
    return logits.data_ptr<float>();
  } else {
    return reinterpret_cast<uint16_t*>(logits.data_ptr<at::BFloat16>());
  }
}

inline float value_of(float x) { return x; }
inline float value_of(uint16_t x) { return widen(x); }

// logits x W^T (N, V), bias (V,) or absent, target (N,) -> log p_target (N,) and lse (N,).
template <typename Row>
std::tuple<Tensor, Tensor> log_prob_rows(const Tensor& logits, const std::optional<Tensor>& bias,
                                         const Tensor& target) {
  const Tensor b_tensor = bias_or_zeros(logits, bias);
  const float* b = b_tensor.data_ptr<float>();
  const int64_t N = logits.size(0), V = logits.size(1);
  const auto options = logits.options().dtype(at::kFloat);
  Tensor log_prob = at::empty({N}, options), lse = at::empty({N}, options);
  const Row* z_data = rows_of<Row>(logits);
  const int64_t* y_data = target.data_ptr<int64_t>();
  float *out = log_prob.data_ptr<float>(), *lse_out = lse.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const Row* z = z_data + n * V;
      const int64_t y = y_data[n];
      lse_out[n] = row_lse(z, b, V);
      out[n] = value_of(z[y]) + b[y] - lse_out[n];
    }
  });
  return {log_prob, lse};
}

std::tuple<Tensor, Tensor> vocabulary_log_prob(const Tensor& logits, const std::optional<Tensor>& bias,
                                               const Tensor& target) {
  check_rows(logits, bias, target);
  return logits.scalar_type() == at::kFloat ? log_prob_rows<float>(logits, bias, target)
                                            : log_prob_rows<uint16_t>(logits, bias, target);
}

// In place: logits x W^T (N, V) become dL/dz = g (δ_vy − exp(z − lse)), z = x W^T + b, for bias
// (V,) or absent, lse, target, grad (N,).
// Returns the column sums (V,), the bias gradient. Each thread sums its own rows into a row of
// a (threads, V) buffer; the rows are added at the end.
template <typename Row>
Tensor gradient_rows(const Tensor& logits, const std::optional<Tensor>& bias, const Tensor& lse,
                     const Tensor& target, const Tensor& grad) {
  const Tensor b_tensor = bias_or_zeros(logits, bias);
  const float* b = b_tensor.data_ptr<float>();
  const int64_t N = logits.size(0), V = logits.size(1);
  Tensor partial = at::zeros({at::get_num_threads(), V}, logits.options().dtype(at::kFloat));
  Row* z_data = rows_of<Row>(logits);
  const float *lse_data = lse.data_ptr<float>(), *g_data = grad.data_ptr<float>();
  const int64_t* y_data = target.data_ptr<int64_t>();
  float* partial_data = partial.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    float* column_sum = partial_data + at::get_thread_num() * V;
    for (int64_t n = begin; n < end; ++n) {
      Row* z = z_data + n * V;
      const float g = g_data[n];
      if (g == 0.f) {  // a padded position: its whole row of the gradient is 0 (0 has the same bits)
        std::fill_n(z, V, Row{0});
        continue;
      }
      row_gradient(z, b, g, lse_data[n], column_sum, V);
      const int64_t y = y_data[n];
      if constexpr (std::is_same_v<Row, float>) {
        z[y] += g;
      } else {
        z[y] = narrow(widen(z[y]) + g);
      }
      column_sum[y] += g;
    }
  });
  return partial.size(0) == 1 ? partial[0] : partial.sum(0);
}

Tensor vocabulary_log_prob_backward(const Tensor& logits, const std::optional<Tensor>& bias, const Tensor& lse,
                                    const Tensor& target, const Tensor& grad) {
  check_rows(logits, bias, target);
  const int64_t N = logits.size(0);
  TORCH_CHECK(lse.is_contiguous() && grad.is_contiguous() && lse.numel() == N && grad.numel() == N &&
                  lse.scalar_type() == at::kFloat && grad.scalar_type() == at::kFloat,
              "lse, grad: (N,) float32");
  return logits.scalar_type() == at::kFloat ? gradient_rows<float>(logits, bias, lse, target, grad)
                                            : gradient_rows<uint16_t>(logits, bias, lse, target, grad);
}

// Inference: the pointer-generator's full next-token distribution as log-probabilities, in place.
// For a row with logits z = x W^T (the bias b added on the fly), copy gate p, attention a (S,)
// over source ids x (S,):
//   P(w) = p softmax(z + b)_w + (1 - p) sum_{i: x_i = w} a_i,   out_w = log max(P(w), floor)
// A word that is not in the source has no copy term, so there log P(w) = z_w + b_w - lse + log p
// (no exp, no log per entry): one pass writes the row, after its lse, and only the source's
// distinct ids get the mixed formula. The torch-ops path (model/decoder.py Decoder.log_probs)
// writes softmax, the product, the scatter's copy, the clamp and the log: five (N, V) tensors.
__attribute__((noinline)) void row_shifted(float* __restrict z, const float* __restrict b, float shift, float low,
                                           int64_t V) {
#pragma omp simd
  for (int64_t v = 0; v < V; ++v) {
    const float value = z[v] + b[v] - shift;
    z[v] = value > low ? value : low;
  }
}

Tensor mixed_log_probs(Tensor& logits, const std::optional<Tensor>& bias, const Tensor& copy_gate,
                       const Tensor& attention, const Tensor& source, double floor) {
  TORCH_CHECK(logits.device().is_cpu() && logits.scalar_type() == at::kFloat && logits.dim() == 2 &&
                  logits.is_contiguous(),
              "logits: contiguous (N, V) CPU float32");
  const int64_t N = logits.size(0), V = logits.size(1);
  TORCH_CHECK(!bias || (bias->is_contiguous() && bias->numel() == V && bias->scalar_type() == at::kFloat),
              "bias: (V,) float32");
  TORCH_CHECK(copy_gate.is_contiguous() && copy_gate.numel() == N && copy_gate.scalar_type() == at::kFloat,
              "copy_gate: (N,) float32");
  TORCH_CHECK(attention.dim() == 2 && attention.size(0) == N && attention.is_contiguous() &&
                  attention.scalar_type() == at::kFloat,
              "attention: contiguous (N, S) float32");
  TORCH_CHECK(source.sizes() == attention.sizes() && source.is_contiguous() && source.scalar_type() == at::kLong,
              "source: (N, S) int64, as attention");
  TORCH_CHECK(floor > 0, "floor > 0");
  if (source.numel() > 0) {  // checked here: an exception must not leave the threads of the loop below
    const int64_t low = source.min().item<int64_t>(), high = source.max().item<int64_t>();
    TORCH_CHECK(low >= 0 && high < V, "source ids outside the vocabulary: ", low, "..", high);
  }
  const Tensor b_tensor = bias_or_zeros(logits, bias);
  const float* b = b_tensor.data_ptr<float>();
  const float *gate = copy_gate.data_ptr<float>(), *weights = attention.data_ptr<float>();
  const int64_t* ids = source.data_ptr<int64_t>();
  float* z_data = logits.data_ptr<float>();
  const int64_t S = attention.size(1);
  const float low = std::log(static_cast<float>(floor));
  at::parallel_for(0, N, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> copied(V, 0.f);  // this thread's copy mass per id, back to 0 after each row
    std::vector<std::pair<int64_t, float>> mixed;  // (id, log P) of the row's distinct source ids
    for (int64_t n = begin; n < end; ++n) {
      float* z = z_data + n * V;
      const float p = gate[n], lse = row_lse(z, b, V);
      const float* a = weights + n * S;
      const int64_t* x = ids + n * S;
      for (int64_t i = 0; i < S; ++i) copied[x[i]] += (1.f - p) * a[i];
      mixed.clear();
      for (int64_t i = 0; i < S; ++i) {
        const int64_t w = x[i];
        if (copied[w] < 0.f) continue;  // already done: marked below
        const float probability = p * std::exp(z[w] + b[w] - lse) + copied[w];
        mixed.emplace_back(w, std::log(std::max(probability, static_cast<float>(floor))));
        copied[w] = -1.f;
      }
      // log p, finite even where p underflowed to 0 (-ffast-math assumes no infinities)
      const float log_p = p > 0.f ? std::log(p) : -1e30f;
      row_shifted(z, b, lse - log_p, low, V);
      for (const auto& [w, value] : mixed) {
        z[w] = value;
        copied[w] = 0.f;
      }
    }
  });
  return logits;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(gatesum, m) {
  m.def("vocabulary_log_prob(Tensor logits, Tensor? bias, Tensor target) -> (Tensor, Tensor)");
  m.def("vocabulary_log_prob_backward(Tensor(a!) logits, Tensor? bias, Tensor lse, Tensor target, Tensor grad) "
        "-> Tensor");
  m.def("mixed_log_probs(Tensor(a!) logits, Tensor? bias, Tensor copy_gate, Tensor attention, Tensor source, "
        "float floor) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(gatesum, CPU, m) {
  m.impl("vocabulary_log_prob", &vocabulary_log_prob);
  m.impl("vocabulary_log_prob_backward", &vocabulary_log_prob_backward);
  m.impl("mixed_log_probs", &mixed_log_probs);
}
