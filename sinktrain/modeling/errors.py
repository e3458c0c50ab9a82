"""The one exception type users see: a message that says what is wrong and how to fix it.

Defined here, in the model-side code that exports carry as remote code, so that code raises the
same errors in and outside sinktrain (sinktrain.errors re-exports it)."""


class SinkTrainError(Exception):
    """A bad input (flag, config, profile, shard, world size) caught before or during a run.

    The message always names the problem and the fix; recipes print it without a traceback.
    """
