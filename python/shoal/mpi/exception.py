"""``MPI.Exception``: what a call raises for bad input, as mpi4py's does
(a ``RuntimeError`` with an MPI error class), and also a ``ShoalError``."""

from __future__ import annotations

from ..errors import ShoalError
from .constants import ERR_OTHER, ERROR_NAMES


class MPIError(ShoalError, RuntimeError):
    """An MPI call refused its arguments or could not complete:
    ``Get_error_class()`` says which kind (``MPI.ERR_RANK``, ...)."""

    def __init__(self, error_class: int, message: str) -> None:
        super().__init__(f"{ERROR_NAMES.get(error_class, 'MPI_ERR_OTHER')}: {message}")
        self.error_class = error_class

    def Get_error_class(self) -> int:
        return self.error_class

    def Get_error_code(self) -> int:
        return self.error_class

    def Get_error_string(self) -> str:
        return str(self)

    @property
    def error_code(self) -> int:
        return self.error_class

    def __reduce__(self):
        message = str(self).partition(": ")[2]
        return (MPIError, (self.error_class, message))


def Get_error_string(errorcode: int) -> str:
    return ERROR_NAMES.get(errorcode, ERROR_NAMES[ERR_OTHER])
