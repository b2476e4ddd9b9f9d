#pragma once

// Parsing a Pushgateway URL into the parts a push needs (the push pastes
// `host:port/metrics/job/...` together), and encoding grouping label values.

#include <string>
#include <string_view>
#include <utility>

#include "keymig/secure.hpp"

namespace keymig::metrics {

struct PushUrl {
  std::string scheme_host;  // "http://127.0.0.1", "https://[::1]"
  std::string port;         // "9091"; 80 or 443 when the URL has none
  std::string username;     // from user:password@, may be empty
  SecretString password;    // wiped when the push is done
  std::string display;  // the URL without credentials, for messages and logs
};

/// `http[s]://[user[:password]@]host[:port][/]`, parsed by libcurl's URL API; user and
/// password are percent-decoded (`p%40ss` is "p@ss"). A path prefix, query or fragment is
/// refused: the Pushgateway serves /metrics/job at its root. Throws keymig::UsageError
/// (the message never repeats the URL or a part of it).
[[nodiscard]] PushUrl parse_push_url(const std::string& url);

/// The Pushgateway grouping key path element for `name`=`value`: plain when the value
/// is URL-safe, else `name@base64` with the base64url value (Pushgateway >= 0.9), so a
/// '/' or an empty value cannot break the path.
[[nodiscard]] std::pair<std::string, std::string> grouping_label(std::string_view name,
                                                                 std::string_view value);

}  // namespace keymig::metrics
