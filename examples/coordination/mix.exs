defmodule Coordination.MixProject do
  use Mix.Project

  def project do
    [
      app: :coordination,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      deps: deps(),
      releases: releases()
    ]
  end

  def application do
    [
      extra_applications: [:logger],
      mod: {Coordination.Application, []}
    ]
  end

  # No dependencies on purpose: the app must build offline from Debian's
  # Elixir and Erlang, without Hex.
  defp deps do
    []
  end

  defp releases do
    [
      coordination: [
        include_executables_for: [:unix]
      ]
    ]
  end
end
