"""The one exception type users see: a message that says what is wrong and how to fix it."""


class SinkTrainError(Exception):
    """A bad input (flag, config, profile, shard, world size) caught before or during a run.

    The message always names the problem and the fix; recipes print it without a traceback.
    """
