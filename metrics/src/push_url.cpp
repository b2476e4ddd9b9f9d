#include "push_url.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "keymig/base64.hpp"
#include "keymig/error.hpp"
#include "keymig/metrics/metrics.hpp"
#include "keymig/secure.hpp"

namespace keymig::metrics {
namespace {

bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool url_safe(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool escapes_valid(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s[i] == '%' && (i + 2 >= s.size() || !is_hex(s[i + 1]) || !is_hex(s[i + 2]))) return false;
  return true;
}

}  // namespace

PushUrl parse_push_url(const std::string& url) {
  // No message quotes the URL: its user:password@ may hold anything, '/' included.
  auto bad = [](const std::string& why) {
    return UsageError("bad Pushgateway URL: " + why +
                      " (expected http://host:port, e.g. http://127.0.0.1:9091; percent-encode "
                      "/ @ : ? # % in a password)");
  };
  if (url.find("://") == std::string::npos) throw bad("no http:// or https://");
  const std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> h(curl_url(), &curl_url_cleanup);
  if (!h) throw bad("out of memory");
  // libcurl's own parser, so that what is checked here is what the push connects to.
  if (const CURLUcode rc =
          curl_url_set(h.get(), CURLUPART_URL, url.c_str(), CURLU_NON_SUPPORT_SCHEME);
      rc != CURLUE_OK)
    throw bad(curl_url_strerror(rc));
  auto part = [&](CURLUPart which, unsigned flags) -> std::optional<std::string> {
    char* value = nullptr;
    if (curl_url_get(h.get(), which, &value, flags) != CURLUE_OK || value == nullptr)
      return std::nullopt;
    std::string out(value);
    if (which == CURLUPART_PASSWORD) secure_wipe(value, out.size());
    curl_free(value);
    return out;
  };
  const std::string scheme = part(CURLUPART_SCHEME, 0).value_or("");
  if (scheme != "http" && scheme != "https") throw bad("the scheme must be http or https");
  const std::string host = part(CURLUPART_HOST, 0).value_or("");
  if (host.empty() || host == "[]") throw bad("no host");
  const std::string path = part(CURLUPART_PATH, 0).value_or("");
  if (!path.empty() && path != "/") throw bad("a path after host:port is not supported");
  if (part(CURLUPART_QUERY, 0) || part(CURLUPART_FRAGMENT, 0))
    throw bad("a query or fragment is not supported");
  const std::string port = part(CURLUPART_PORT, CURLU_DEFAULT_PORT).value_or("");
  if (!is_digits(port) || port.size() > 5 || std::stoul(port) == 0 || std::stoul(port) > 65535)
    throw bad("the port must be 1..65535");

  PushUrl out;
  for (const CURLUPart which : {CURLUPART_USER, CURLUPART_PASSWORD}) {
    auto raw = part(which, 0);
    if (!raw) continue;
    // libcurl passes "%zz" on as it is; a password meant literally is ambiguous, so refused.
    auto decoded = part(which, CURLU_URLDECODE);
    const bool valid = decoded && escapes_valid(*raw);
    secure_wipe(raw->data(), raw->size());
    if (!valid) throw bad("a malformed %-escape in the user or password");
    if (which == CURLUPART_USER) {
      out.username = std::move(*decoded);
    } else {
      out.password = SecretString(std::string_view(*decoded));
      secure_wipe(decoded->data(), decoded->size());
    }
  }
  out.scheme_host = scheme + "://" + host;
  out.port = port;
  out.display = out.scheme_host + ":" + port;
  return out;
}

std::string push_gateway_problem(const std::string& url) {
  try {
    (void)parse_push_url(url);
  } catch (const UsageError& e) {
    return e.what();
  }
  return std::string();
}

std::pair<std::string, std::string> grouping_label(std::string_view name, std::string_view value) {
  // "." and ".." would be folded away as path segments by the HTTP client.
  if (!value.empty() && value != "." && value != ".." &&
      std::all_of(value.begin(), value.end(), url_safe)) {
    return {std::string(name), std::string(value)};
  }
  // The Pushgateway spells an empty value as a lone "=", since an empty path element
  // would vanish; anything else is the canonical padded form, which it also accepts.
  return {std::string(name) + "@base64",
          value.empty() ? std::string("=") : encode_base64url(value)};
}

}  // namespace keymig::metrics
