// The admin queue's request params: whatever JSON (or not) the application wrote into
// keymig.requests. Input: the kind, a newline, the params text.
#include "fuzz_support.hpp"
#include "keymig/service/jobs.hpp"

using namespace keymig;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto text = fuzz::text(data, size);
  const auto nl = text.find('\n');
  const auto kind = text.substr(0, nl);
  const auto params = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
  const auto parsed = service::parse_request(kind, params);  // never throws
  // Either a job or the reason it is refused, never both and never neither.
  fuzz::require(parsed.job.has_value() != !parsed.error.empty());
  if (parsed.job && parsed.job->kind == service::JobKind::reset_mfa)
    fuzz::require(!parsed.job->selection.empty());
  return 0;
}
