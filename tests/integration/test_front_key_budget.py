"""The failed-key budget of `test_key_budget.py`, run again against a real `gateway serve`
process with the fast front (`GATEWAY_FAST_DATA_PLANE=true`): the same test functions, only
the `make_gateway` fixture differs (test_front_forwarding's)."""

from __future__ import annotations

from tests.integration.test_front_forwarding import make_front_gateway
from tests.integration.test_key_budget import (
    test_a_good_key_does_not_reset_the_budget,
    test_a_valid_key_from_another_address_still_works,
    test_after_the_window_the_address_may_try_again,
    test_an_over_budget_address_gets_429_for_a_key_not_in_memory,
    test_bad_keys_from_one_address_end_in_429_and_cost_no_more_lookups,
    test_malformed_keys_count_against_the_address_too,
    test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored,
    test_the_key_apis_share_the_budget_in_their_own_shape,
)

REUSED = (
    make_front_gateway,
    test_a_good_key_does_not_reset_the_budget,
    test_a_valid_key_from_another_address_still_works,
    test_after_the_window_the_address_may_try_again,
    test_an_over_budget_address_gets_429_for_a_key_not_in_memory,
    test_bad_keys_from_one_address_end_in_429_and_cost_no_more_lookups,
    test_malformed_keys_count_against_the_address_too,
    test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored,
    test_the_key_apis_share_the_budget_in_their_own_shape,
)
