// The COHORT_* registry: parsing, validation messages, and that docs/config.md is the one the
// registry generates.
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "common/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cohort::config {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }

 private:
  const char* name_;
};

TEST(Config, DefaultsApplyWhenUnset) {
  unsetenv("COHORT_TIMEOUT");
  EXPECT_EQ(*GetDuration("COHORT_TIMEOUT"), absl::Seconds(300));
  EXPECT_EQ(*GetBytes("COHORT_CHUNK_BYTES"), 512 << 10);
  EXPECT_EQ(*GetString("COHORT_JOB_ID"), "default");
}

TEST(Config, ParsesDurationsAndSizes) {
  EXPECT_EQ(*ParseDuration("300"), absl::Seconds(300));
  EXPECT_EQ(*ParseDuration("1.5"), absl::Milliseconds(1500));
  EXPECT_EQ(*ParseDuration("250ms"), absl::Milliseconds(250));
  EXPECT_EQ(*ParseDuration("5m"), absl::Minutes(5));
  EXPECT_FALSE(ParseDuration("soon").ok());
  EXPECT_FALSE(ParseDuration("-3").ok());
  EXPECT_EQ(*ParseBytes("8"), 8);
  EXPECT_EQ(*ParseBytes("64K"), 64 << 10);
  EXPECT_EQ(*ParseBytes("1m"), 1 << 20);
  EXPECT_EQ(*ParseBytes("2G"), int64_t{2} << 30);
  EXPECT_FALSE(ParseBytes("lots").ok());
  EXPECT_FALSE(ParseBytes("-1").ok());
}

TEST(Config, BadValueNamesVariableValueAndWhatIsAccepted) {
  ScopedEnv env("COHORT_CHUNK_BYTES", "12");
  auto value = GetBytes("COHORT_CHUNK_BYTES");
  ASSERT_FALSE(value.ok());
  EXPECT_THAT(std::string(value.status().message()),
              AllOf(HasSubstr("COHORT_CHUNK_BYTES"), HasSubstr("\"12\""), HasSubstr("from 4096")));
  absl::Status all = ValidateEnvironment();
  EXPECT_THAT(std::string(all.message()), HasSubstr("COHORT_CHUNK_BYTES"));
}

TEST(Config, ChoicesAreCheckedCaseInsensitively) {
  {
    ScopedEnv env("COHORT_LOG_LEVEL", "debug");
    EXPECT_TRUE(ValidateEnvironment().ok());
  }
  ScopedEnv env("COHORT_LOG_LEVEL", "chatty");
  absl::Status status = ValidateEnvironment();
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("COHORT_LOG_LEVEL"), HasSubstr("chatty"), HasSubstr("ERROR, WARN")));
}

// Found by tests/fuzz/config_fuzz: COHORT_TORCH_CUDA=STAGED (now COHORT_CUDA_PATH) was
// accepted, then compared with "staged" and taken for auto. A choice reads back in its
// registered spelling.
TEST(Config, ChoicesReadBackInTheirRegisteredSpelling) {
  ScopedEnv cuda("COHORT_CUDA_PATH", "STAGED");
  EXPECT_EQ(GetString("COHORT_CUDA_PATH").value_or(""), "staged");
  ScopedEnv level("COHORT_LOG_LEVEL", "WARn");
  EXPECT_EQ(GetString("COHORT_LOG_LEVEL").value_or(""), "WARN");
}

TEST(Config, IntegersHonourBounds) {
  ScopedEnv env("COHORT_SPIN_US", "-5");
  EXPECT_FALSE(GetInt("COHORT_SPIN_US").ok());
}

TEST(Config, UnknownVariablesOnlyWarn) {
  ScopedEnv env("COHORT_NOT_A_THING", "1");
  EXPECT_TRUE(ValidateEnvironment().ok());
}

TEST(Config, EveryVariableIsDocumentedOnce) {
  std::set<std::string> names;
  for (const Variable& variable : Registry()) {
    EXPECT_TRUE(names.insert(variable.name).second) << variable.name << " registered twice";
    EXPECT_NE(std::string(variable.doc), "") << variable.name;
    // Each default is itself a valid value.
    EXPECT_TRUE(unsetenv(variable.name) == 0);
  }
  EXPECT_TRUE(ValidateEnvironment().ok());
}

TEST(Config, DocsConfigMdIsGeneratedFromTheRegistry) {
  const char* source = std::getenv("COHORT_TEST_SOURCE_DIR");
  ASSERT_NE(source, nullptr) << "run through ctest, which sets COHORT_TEST_SOURCE_DIR";
  std::ifstream file(std::string(source) + "/docs/config.md");
  ASSERT_TRUE(file.good()) << "docs/config.md is missing; run make docs";
  std::stringstream text;
  text << file.rdbuf();
  EXPECT_EQ(text.str(), Markdown()) << "docs/config.md is stale; run make docs";
}

}  // namespace
}  // namespace cohort::config
