// Interop with the reference implementation: python3 with pyca/cryptography, run as a
// child process on JSON files (keys never go on a command line).

#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "crypto_test_support.hpp"
#include "keymig/crypto/fernet.hpp"

using namespace keymig::crypto;
using namespace keymig::crypto::test;
using nlohmann::json;

namespace {

std::string hex(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char c : bytes) {
    out += kHex[static_cast<unsigned char>(c) >> 4];
    out += kHex[static_cast<unsigned char>(c) & 15];
  }
  return out;
}

std::string unhex(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i + 1 < text.size(); i += 2)
    out += static_cast<char>(std::stoi(text.substr(i, 2), nullptr, 16));
  return out;
}

// A private temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/keymig-crypto-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

json run_oracle(const std::string& mode, const json& input) {
  const TempDir dir;
  const auto in_path = dir.path() / "in.json";
  const auto out_path = dir.path() / "out.json";
  std::ofstream(in_path) << input.dump();
  const char* python = std::getenv("KEYMIG_PYTHON");
  const std::string script = std::string(KEYMIG_SOURCE_DIR) + "/tests/crypto/fernet_oracle.py";
  const std::string command = std::string("'") + (python != nullptr ? python : "python3") + "' '" +
                              script + "' " + mode + " '" + in_path.string() + "' '" +
                              out_path.string() + "'";
  const int rc = std::system(command.c_str());
  if (rc != 0) throw std::runtime_error("the Python oracle failed: " + command);
  std::ifstream out(out_path);
  return json::parse(out);
}

std::vector<std::string> random_plaintexts(std::size_t count, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> length(0, 200);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < count; ++i) {
    std::string p(static_cast<std::size_t>(length(rng)), '\0');
    for (char& c : p) c = static_cast<char>(byte(rng));
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

TEST_CASE("tokens keymig makes decrypt in Python to the same bytes", "[crypto][interop]") {
  const Key key = Key::generate();
  const Fernet fernet(copy_of(key));
  const auto plaintexts = random_plaintexts(1000, 20240601);
  json input{{"key", std::string(key.encode().view())}, {"tokens", json::array()}};
  for (const auto& p : plaintexts) input["tokens"].push_back(std::string(fernet.encrypt(p).view()));
  const json out = run_oracle("decrypt", input);
  REQUIRE(out.at("plaintexts").size() == plaintexts.size());
  int mismatches = 0;
  for (std::size_t i = 0; i < plaintexts.size(); ++i) {
    const auto& got = out["plaintexts"][i];
    if (got.is_null() || unhex(got.get<std::string>()) != plaintexts[i]) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("tokens Python makes decrypt in keymig to the same bytes", "[crypto][interop]") {
  const Key key = Key::generate();
  const Fernet fernet(copy_of(key));
  const auto plaintexts = random_plaintexts(1000, 1985);
  json input{{"key", std::string(key.encode().view())}, {"plaintexts", json::array()}};
  for (const auto& p : plaintexts) input["plaintexts"].push_back(hex(p));
  const json out = run_oracle("encrypt", input);
  REQUIRE(out.at("tokens").size() == plaintexts.size());
  int mismatches = 0;
  for (std::size_t i = 0; i < plaintexts.size(); ++i) {
    const auto result = fernet.decrypt(out["tokens"][i].get<std::string>());
    if (!result.ok() || result.plaintext.view() != plaintexts[i]) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("rotated tokens keep Python's timestamp and decrypt under the new key only",
          "[crypto][interop]") {
  const Key old_key = Key::generate();
  const Key new_key = Key::generate();
  std::vector<Key> rolling;
  rolling.push_back(copy_of(old_key));
  const KeyRing ring(copy_of(new_key), std::move(rolling));
  // Tokens made by Python under the old key, some of them with old timestamps made by
  // keymig so that "keeps the timestamp" cannot pass by rotating at the same second.
  const auto plaintexts = random_plaintexts(100, 7);
  json made{{"key", std::string(old_key.encode().view())}, {"plaintexts", json::array()}};
  for (const auto& p : plaintexts) made["plaintexts"].push_back(hex(p));
  std::vector<std::string> originals = run_oracle("encrypt", made).at("tokens");
  const Fernet old_fernet(copy_of(old_key));
  for (std::uint64_t i = 0; i < 50; ++i)
    originals.push_back(std::string(old_fernet.encrypt_at_time("old", 1000000000 + i).view()));

  json read{{"key", std::string(old_key.encode().view())}, {"tokens", originals}};
  const json original_info = run_oracle("decrypt", read);

  json check{{"old_key", std::string(old_key.encode().view())},
             {"new_key", std::string(new_key.encode().view())},
             {"tokens", json::array()}};
  for (const auto& token : originals) {
    const auto rotation = ring.rotate(token);
    REQUIRE(rotation.reason == Reason::ok);
    REQUIRE(rotation.key_index == 1);
    check["tokens"].push_back(std::string(rotation.token.view()));
  }
  const json results = run_oracle("check_rotated", check).at("results");
  REQUIRE(results.size() == originals.size());
  for (std::size_t i = 0; i < originals.size(); ++i) {
    INFO("token " << i);
    CHECK(results[i]["new_ok"].get<bool>());
    CHECK(results[i]["both_ok"].get<bool>());
    CHECK_FALSE(results[i]["old_ok"].get<bool>());
    REQUIRE_FALSE(original_info["timestamps"][i].is_null());
    CHECK(results[i]["timestamp"] == original_info["timestamps"][i]);
  }
}

TEST_CASE("non_canonical means exactly what Python's decoder still reads",
          "[crypto][interop][base64]") {
  const Key key = Key::generate();
  const Fernet fernet(copy_of(key));
  std::mt19937_64 rng(42);
  const std::string noise = " \n\t\r=%+/-_A.\x01\x7f";
  std::vector<std::string> variants;
  for (int i = 0; i < 400; ++i) {
    std::string token(fernet.encrypt(std::string(static_cast<std::size_t>(i % 40), 'p')).view());
    switch (i % 8) {
      case 0:  // insert a noise character somewhere
        token.insert(rng() % (token.size() + 1), 1, noise[rng() % noise.size()]);
        break;
      case 1:  // drop the padding
        while (!token.empty() && token.back() == '=') token.pop_back();
        break;
      case 2:  // append junk
        token += noise.substr(rng() % noise.size(), 3);
        break;
      case 3:  // standard alphabet
        for (char& c : token) c = c == '-' ? '+' : c == '_' ? '/' : c;
        break;
      case 4:  // flip the lowest bit of the last data character
      {
        std::size_t end = token.size();
        while (end > 0 && token[end - 1] == '=') --end;
        static const std::string alphabet =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        token[end - 1] = alphabet[alphabet.find(token[end - 1]) ^ 1];
        break;
      }
      case 5:  // cut characters
        token.resize(token.size() - 1 - rng() % 3);
        break;
      case 6:  // non-ASCII
        token.insert(rng() % token.size(), "\xc3\xa9");
        break;
      default:  // unchanged
        break;
    }
    variants.push_back(token);
  }
  json input{{"key", std::string(key.encode().view())}, {"tokens", variants}};
  const json out = run_oracle("decrypt", input);
  int disagreements = 0;
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const auto result = fernet.decrypt(variants[i]);
    const bool python_reads = !out["plaintexts"][i].is_null();
    const bool padded_or_none_needed =
        variants[i].size() % 4 == 0 || variants[i].find('=') != std::string::npos;
    // keymig accepts a missing padding (as pyca's newer Rust decoder does); Python 48
    // does not. Everything else: Python reads it iff it is ok or non_canonical.
    bool agree = false;
    if (result.reason == Reason::ok)
      agree = python_reads || !padded_or_none_needed;
    else if (result.reason == Reason::non_canonical)
      agree = python_reads;
    else
      agree = !python_reads;
    if (!agree) {
      ++disagreements;
      UNSCOPED_INFO("variant " << i << " kind " << i % 8 << ": keymig "
                               << reason_name(result.reason) << ", python "
                               << (python_reads ? "reads" : "refuses"));
    }
  }
  CHECK(disagreements == 0);
}

TEST_CASE("every spelling Python reads under a rolling key rotates to one it reads alone",
          "[crypto][interop][base64][keyring]") {
  const Key active = Key::generate();
  const Key rolling = Key::generate();
  std::vector<Key> rolling_keys;
  rolling_keys.push_back(copy_of(rolling));
  const KeyRing ring(copy_of(active), std::move(rolling_keys));
  const Fernet maker(copy_of(rolling));
  std::mt19937_64 rng(20);
  const std::string noise = " \n\t\r\v\f=%+/-_.:*\x01\x7f";
  std::vector<std::string> variants;
  for (int i = 0; i < 600; ++i) {
    std::string token(
        maker.encrypt_at_time(std::string(static_cast<std::size_t>(i % 50), 's'), 1'500'000'000 + i)
            .view());
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 7) {
        case 0:  // a noise character anywhere
          token.insert(rng() % (token.size() + 1), 1, noise[rng() % noise.size()]);
          break;
        case 1:  // leading or trailing whitespace
          if (rng() % 2 != 0)
            token = std::string(1 + rng() % 2, " \n\t"[rng() % 3]) + token;
          else
            token += std::string(1 + rng() % 2, " \n\r"[rng() % 3]);
          break;
        case 2:  // junk after the padding
          token += noise.substr(rng() % noise.size(), 4) + "AAAA";
          break;
        case 3:  // standard alphabet
          for (char& c : token) c = c == '-' ? '+' : c == '_' ? '/' : c;
          break;
        case 4:  // padding dropped or doubled
          if (rng() % 2 != 0)
            while (!token.empty() && token.back() == '=') token.pop_back();
          else
            token += "=";
          break;
        case 5:  // a line break every n characters, as a mail or PEM tool wraps
        {
          const std::size_t every = 16 + rng() % 60;
          for (std::size_t at = every; at < token.size(); at += every + 1) token.insert(at, "\n");
          break;
        }
        default:  // a character cut out
          token.erase(rng() % token.size(), 1);
          break;
      }
    }
    variants.push_back(token);
  }
  json input{{"key", std::string(rolling.encode().view())}, {"tokens", variants}};
  const json out = run_oracle("decrypt", input);
  json check{{"old_key", std::string(rolling.encode().view())},
             {"new_key", std::string(active.encode().view())},
             {"tokens", json::array()}};
  std::vector<std::size_t> read_ids;
  int disagreements = 0, python_reads_count = 0;
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const bool python_reads = !out["plaintexts"][i].is_null();
    python_reads_count += python_reads ? 1 : 0;
    const auto c = ring.classify(variants[i]);
    const bool keymig_reads = c.reason == Reason::ok && c.key_index == 1;
    // keymig also takes canonical text without its padding (pyca's newer decoder does).
    const bool unpadded = c.canonical && variants[i].find('=') == std::string::npos;
    if (python_reads != keymig_reads && !(keymig_reads && unpadded)) {
      ++disagreements;
      UNSCOPED_INFO("variant " << i << ": keymig " << reason_name(c.reason) << ", python "
                               << (python_reads ? "reads" : "refuses"));
      continue;
    }
    if (!python_reads) {
      if (!keymig_reads) CHECK(ring.rotate(variants[i]).token.empty());
      continue;
    }
    const auto rotation = ring.rotate(variants[i]);
    REQUIRE(rotation.reason == Reason::ok);
    REQUIRE(rotation.key_index == 1);
    check["tokens"].push_back(std::string(rotation.token.view()));
    read_ids.push_back(i);
  }
  CHECK(disagreements == 0);
  REQUIRE(python_reads_count > 100);  // the mangling leaves many readable
  const json results = run_oracle("check_rotated", check).at("results");
  REQUIRE(results.size() == read_ids.size());
  for (std::size_t k = 0; k < read_ids.size(); ++k) {
    INFO("variant " << read_ids[k]);
    CHECK(results[k]["new_ok"].get<bool>());
    CHECK_FALSE(results[k]["old_ok"].get<bool>());
    CHECK(results[k]["timestamp"] == out["timestamps"][read_ids[k]]);
  }
}
