#include "push_url.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "keymig/base64.hpp"
#include "keymig/error.hpp"
#include "keymig/secure.hpp"

namespace keymig::metrics {
namespace {

bool url_safe(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

using Url = std::unique_ptr<CURLU, decltype(&curl_url_cleanup)>;

// One part of a parsed URL; nullopt when the URL has none.
std::optional<std::string> part(const Url& url, CURLUPart which, unsigned flags = 0) {
  char* value = nullptr;
  if (curl_url_get(url.get(), which, &value, flags) != CURLUE_OK || value == nullptr)
    return std::nullopt;
  std::string out(value);
  // The user and password parts hold a credential: wipe libcurl's copy too.
  secure_wipe(value, out.size());
  curl_free(value);
  return out;
}

}  // namespace

PushUrl parse_push_url(const std::string& text) {
  // A message quotes the URL only as rebuilt from its parts, without credentials: the
  // text as given may hold a password (a '/', '?' or '#' in it moves where a hand parser
  // thinks the host starts).
  auto bad = [](const std::string& why, const std::string& shown) {
    return UsageError("bad Pushgateway URL" + (shown.empty() ? "" : " '" + shown + "'") + ": " +
                      why + " (expected http://host:port, e.g. http://127.0.0.1:9091; " +
                      "percent-encode '@', '/', ':', '?', '#' and '%' in a user or password)");
  };
  const Url url(curl_url(), &curl_url_cleanup);
  if (!url) throw UsageError("bad Pushgateway URL: out of memory");
  if (const CURLUcode rc = curl_url_set(url.get(), CURLUPART_URL, text.c_str(), 0); rc != CURLUE_OK)
    throw bad(curl_url_strerror(rc), "");

  PushUrl out;
  const std::string scheme = part(url, CURLUPART_SCHEME).value_or("");
  const std::string host = part(url, CURLUPART_HOST).value_or("");
  const auto port = part(url, CURLUPART_PORT);
  out.display = scheme + "://" + host + (port ? ":" + *port : "");
  if (scheme != "http" && scheme != "https") throw bad("scheme must be http or https", out.display);
  if (host.empty()) throw bad("no host", out.display);
  const std::string path = part(url, CURLUPART_PATH).value_or("/");
  if (!path.empty() && path != "/")
    throw bad("a path after host:port is not supported", out.display);
  if (part(url, CURLUPART_QUERY) || part(url, CURLUPART_FRAGMENT))
    throw bad("a query or fragment is not supported", out.display);
  if (part(url, CURLUPART_OPTIONS)) throw bad("login options are not supported", out.display);
  out.port = part(url, CURLUPART_PORT, CURLU_DEFAULT_PORT).value_or("");
  // The credentials as the server must see them: %40 is '@'.
  out.username = part(url, CURLUPART_USER, CURLU_URLDECODE).value_or("");
  if (auto password = part(url, CURLUPART_PASSWORD, CURLU_URLDECODE)) {
    out.password = SecretString(std::string_view(*password));
    secure_wipe(password->data(), password->size());
  }
  if (!out.password.empty() && out.username.empty())
    throw bad("a password without a user name", out.display);
  out.scheme_host = scheme + "://" + host;
  return out;
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
