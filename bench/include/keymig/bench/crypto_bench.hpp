#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "keymig/error.hpp"

namespace keymig::bench {

/// What stops the crypto benchmark: an output that does not check out. A wrong result is
/// an error, never a figure. Never carries a key, a token or a plaintext.
class CryptoBenchError : public keymig::Error {
 public:
  using keymig::Error::Error;
};

struct CryptoBenchOptions {
  std::vector<int> threads{1, 2};    // one measurement set per thread count
  double seconds = 1.0;              // per timed measurement
  std::size_t plaintext_bytes = 32;  // a 32-character base32 TOTP secret
  int repetitions = 3;               // measurements per figure; the report is their median
};

/// One op at one thread count. Figures are medians over the repetitions.
struct CryptoBenchResult {
  std::string op;  // "rotate", "classify" or "verify"
  int threads = 0;
  double tokens_per_second = 0;
  double per_thread_tokens_per_second = 0;
  bool oversubscribed = false;  // more threads than cores: not a meaningful figure
  double cpu_share = 0;  // CPU time the threads got / (wall time x threads); low = busy machine
  double per_thread_tokens_per_cpu_second = 0;  // per second of CPU actually received
};

/// The primitive floor on one thread: per token two HMAC-SHA256 over the token body,
/// one AES-128-CBC decrypt and one encrypt of the padded plaintext, 16 random bytes,
/// with contexts reused as keymig reuses them.
struct CryptoBenchFloor {
  double tokens_per_second = 0;
  double tokens_per_cpu_second = 0;
  double ratio = 0;  // CPU time per rotate / CPU time per floor token, one thread each
};

struct CryptoBenchReport {
  std::vector<CryptoBenchResult> results;
  CryptoBenchFloor floor;
  std::size_t plaintext_bytes = 0;
  unsigned cores = 0;  // std::thread::hardware_concurrency()
  double seconds = 0;
  int repetitions = 0;
};

/// Makes real tokens up front (under a rolling key for rotate and classify, under the
/// active key for verify), times each op per thread count, checks the outputs after the
/// timed part and measures the floor. Keys are generated, in memory only.
/// Takes about 4 x repetitions x seconds per thread count. Not to be run concurrently
/// with other CPU-heavy work if the figures matter. Throws keymig::UsageError for bad
/// options, CryptoBenchError when an output is wrong.
[[nodiscard]] CryptoBenchReport run_crypto_bench(const CryptoBenchOptions& options);

/// {"results": [{"op", "threads", "tokens_per_second", "per_thread_tokens_per_second",
/// "oversubscribed", "cpu_share", "per_thread_tokens_per_cpu_second"}], "floor":
/// {"tokens_per_second", "tokens_per_cpu_second", "ratio"}, "plaintext_bytes",
/// "cores", "seconds", "repetitions"}
[[nodiscard]] std::string to_json(const CryptoBenchReport& report);
/// A table for the terminal.
[[nodiscard]] std::string to_text(const CryptoBenchReport& report);

}  // namespace keymig::bench
