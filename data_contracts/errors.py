"""Errors a user sees when their data breaks the contract."""


class DataContractError(ValueError):
    """A file cannot be read as a contract table (missing, empty, wrong delimiter or encoding)."""


class DataValidationError(ValueError):
    """A blocking expectation failed; the message names table, column, count and example rows."""

    def __init__(self, message: str, report_path: str | None = None):
        super().__init__(message)
        self.report_path = report_path
