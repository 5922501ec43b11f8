"""The one "latest wins" mailbox: a reader gets the newest item, a replaced one is reported as dropped."""

import threading

import pytest

from instantrestore.runtime.frames.mailbox import Empty, LatestSlot


def test_the_latest_item_wins_and_a_replaced_one_is_reported():
    slot = LatestSlot()
    assert slot.put("first") is False
    assert slot.put("second") is True  # "first" was never read: the caller counts it as dropped
    assert slot.get(timeout=1.0) == "second"
    assert slot.empty()
    with pytest.raises(Empty):
        slot.get(timeout=0)
    with pytest.raises(Empty):
        slot.get(timeout=0.01)


@pytest.mark.timeout(60)
def test_a_reader_behind_a_fast_writer_sees_only_newer_items_and_the_last_one():
    slot, seen, count = LatestSlot(), [], 2000
    replaced = []

    def write():
        replaced.extend(slot.put(index) for index in range(count))

    writer = threading.Thread(target=write)
    writer.start()
    while not seen or seen[-1] != count - 1:
        try:
            seen.append(slot.get(timeout=5.0))
        except Empty:
            break
    writer.join()
    assert seen[-1] == count - 1 and seen == sorted(set(seen))  # in order, never an older one after a newer
    assert len(seen) + sum(replaced) == count  # every item was either read or reported replaced
