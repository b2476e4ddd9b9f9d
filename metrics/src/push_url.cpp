#include "push_url.hpp"

#include <algorithm>

#include "keymig/base64.hpp"
#include "keymig/error.hpp"

namespace keymig::metrics {
namespace {

bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool url_safe(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

}  // namespace

PushUrl parse_push_url(const std::string& url) {
  auto bad = [&](const std::string& why, const std::string& shown) {
    return UsageError("bad Pushgateway URL '" + shown + "': " + why +
                      " (expected http://host:port, e.g. http://127.0.0.1:9091)");
  };
  PushUrl out;
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) throw bad("no http:// or https://", url);
  const std::string scheme = url.substr(0, scheme_end);
  std::string rest = url.substr(scheme_end + 3);

  // Credentials are cut out before anything can quote the URL back.
  const auto path_start = rest.find('/');
  std::string authority = rest.substr(0, path_start);
  const std::string path = path_start == std::string::npos ? "" : rest.substr(path_start);
  const auto at = authority.rfind('@');
  if (at != std::string::npos) {
    const std::string userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const auto colon = userinfo.find(':');
    out.username = userinfo.substr(0, colon);
    if (colon != std::string::npos) out.password = userinfo.substr(colon + 1);
  }
  out.display = scheme + "://" + authority + path;

  if (scheme != "http" && scheme != "https") throw bad("scheme must be http or https", out.display);
  if (!path.empty() && path != "/") {
    throw bad("a path after host:port is not supported", out.display);
  }

  std::string host = authority;
  std::string port;
  if (!authority.empty() && authority.front() == '[') {  // [IPv6]:port
    const auto close = authority.find(']');
    if (close == std::string::npos) throw bad("unclosed '['", out.display);
    host = authority.substr(0, close + 1);
    const std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw bad("junk after ']'", out.display);
      port = after.substr(1);
    }
  } else if (const auto colon = authority.rfind(':'); colon != std::string::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) throw bad("empty port", out.display);
  }
  if (host.empty() || host == "[]") throw bad("no host", out.display);
  if (port.empty()) port = scheme == "https" ? "443" : "80";
  if (!is_digits(port) || port.size() > 5 || std::stoul(port) == 0 || std::stoul(port) > 65535) {
    throw bad("port must be 1..65535", out.display);
  }
  out.scheme_host = scheme + "://" + host;
  out.port = port;
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
