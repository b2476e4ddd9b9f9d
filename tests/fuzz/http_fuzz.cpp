// The HTTP request path: any bytes a client on the metrics port sends, through the
// server's own parser and limits.
#include "fuzz_support.hpp"
#include "keymig/http/server.hpp"

using namespace keymig;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  http::HttpRequest request;
  const int status = http::parse_request_head(fuzz::text(data, size), request);
  fuzz::require(status == 0 || status == 400 || status == 405 || status == 413 ||
                status == 414 || status == 431);
  if (status == 0) {
    // What the handler may rely on.
    fuzz::require(request.method == "GET" || request.method == "HEAD");
    fuzz::require(!request.path.empty() && request.path.front() == '/');
  }
  return 0;
}
