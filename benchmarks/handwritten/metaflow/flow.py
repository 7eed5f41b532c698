"""Twenty light tasks in a row, written by hand as a Metaflow user would: the
required start and end steps are the first and the last of the twenty, so the
flow has exactly twenty steps (start, t001 ... t018, end), each a task that does
nothing but hand over to the next.

    python flow.py run
"""
from metaflow import FlowSpec, step


class HandwrittenChainFlow(FlowSpec):

    @step
    def start(self):
        self.next(self.t001)

    @step
    def t001(self):
        self.next(self.t002)

    @step
    def t002(self):
        self.next(self.t003)

    @step
    def t003(self):
        self.next(self.t004)

    @step
    def t004(self):
        self.next(self.t005)

    @step
    def t005(self):
        self.next(self.t006)

    @step
    def t006(self):
        self.next(self.t007)

    @step
    def t007(self):
        self.next(self.t008)

    @step
    def t008(self):
        self.next(self.t009)

    @step
    def t009(self):
        self.next(self.t010)

    @step
    def t010(self):
        self.next(self.t011)

    @step
    def t011(self):
        self.next(self.t012)

    @step
    def t012(self):
        self.next(self.t013)

    @step
    def t013(self):
        self.next(self.t014)

    @step
    def t014(self):
        self.next(self.t015)

    @step
    def t015(self):
        self.next(self.t016)

    @step
    def t016(self):
        self.next(self.t017)

    @step
    def t017(self):
        self.next(self.t018)

    @step
    def t018(self):
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    HandwrittenChainFlow()
