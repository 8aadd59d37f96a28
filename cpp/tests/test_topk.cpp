#include <gtest/gtest.h>

#include <cmath>

#include "sk_edge/engine.hpp"

TEST(TopK, HighestFirstWithSoftmaxScoresAndNames) {
    const float logits[] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f};
    const auto top = sk_edge::top_k(logits, 5, 3, {"a", "b", "c", "d", "e"});
    ASSERT_EQ(top.size(), 3u);
    EXPECT_EQ(top[0].index, 1);  // a tie keeps the lower index first, as numpy's stable argsort of -x
    EXPECT_EQ(top[1].index, 3);
    EXPECT_EQ(top[2].index, 4);
    EXPECT_EQ(top[0].name, "b");
    double sum = 0;
    for (float l : logits) sum += std::exp(l - 3.0);
    EXPECT_NEAR(top[0].score, 1.0 / sum, 1e-6);
    EXPECT_NEAR(top[2].score, std::exp(-1.0) / sum, 1e-6);
}

TEST(TopK, KIsClampedAndNamesAreOptional) {
    const float logits[] = {1.0f, 2.0f};
    const auto top = sk_edge::top_k(logits, 2, 5);
    ASSERT_EQ(top.size(), 2u);
    EXPECT_EQ(top[0].index, 1);
    EXPECT_TRUE(top[0].name.empty());
    EXPECT_NEAR(top[0].score + top[1].score, 1.0, 1e-6);
    EXPECT_TRUE(sk_edge::top_k(logits, 0, 5).empty());
}
