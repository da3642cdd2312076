defmodule Coordination.ShutdownTest do
  use ExUnit.Case, async: false

  import Coordination.TestClient
  alias Coordination.{Health, Shutdown}

  setup do
    on_exit(fn ->
      Health.clear_draining()
      # The drain closed the listening socket; reopen it for the other tests.
      Supervisor.terminate_child(Coordination.HTTP.Supervisor, :socket)
      Supervisor.restart_child(Coordination.HTTP.Supervisor, :socket)
    end)
  end

  # The drain's pause is replaced by waiting for the test's go-ahead, so the
  # test decides when "the drain period" ends instead of racing a timer.
  defp drain_options(test) do
    [
      drain_seconds: 5,
      wait: fn ->
        send(test, {:draining, self()})
        receive do: (:end_drain -> :ok)
      end,
      stop: fn -> send(test, :stopped) end
    ]
  end

  test "a real SIGTERM fails /health first, keeps serving during the drain, then stops" do
    :ok = Shutdown.install(drain_options(self()))
    on_exit(fn -> Shutdown.uninstall() end)

    # A keep-alive connection opened before the signal, like a load balancer's.
    old_connection = connect()
    assert %{status: 200} = request_on(old_connection, "GET", "/health")

    {_, 0} = System.cmd("kill", ["-TERM", System.pid()])
    assert_receive {:draining, drainer}, 5_000

    health = request("GET", "/health")
    assert health.status == 503
    assert health.json["status"] == "draining"

    # New and in-flight work is still served: fresh connections and the old one.
    created = request("POST", "/work", %{"work_type" => "during-drain"})
    assert created.status == 201
    assert request("POST", "/work/#{created.json["id"]}/claim", %{"agent_id" => "d"}).status == 200
    assert request("GET", "/").status == 200

    on_old = request_on(old_connection, "GET", "/work/#{created.json["id"]}")
    assert on_old.status == 200
    # ...but clients are told to reconnect, so they move to a live task.
    assert on_old.headers["connection"] == "close"
    :gen_tcp.close(old_connection)

    refute_received :stopped
    send(drainer, :end_drain)
    assert_receive :stopped, 10_000

    # After the drain the listener is closed.
    assert {:error, :econnrefused} =
             :gen_tcp.connect(~c"127.0.0.1", Coordination.HTTP.Listener.port(), [:binary, active: false], 1_000)
  end

  test "a second SIGTERM during the drain does not start another one" do
    :ok = Shutdown.install(drain_options(self()))
    on_exit(fn -> Shutdown.uninstall() end)

    :gen_event.notify(:erl_signal_server, :sigterm)
    assert_receive {:draining, drainer}, 5_000
    :gen_event.notify(:erl_signal_server, :sigterm)
    # A sync call on the event manager: the second event has been handled when it returns.
    :gen_event.which_handlers(:erl_signal_server)
    refute_receive {:draining, _}, 200

    send(drainer, :end_drain)
    assert_receive :stopped, 10_000
  end

  test "the drain waits for requests still being answered before stopping" do
    test = self()
    Shutdown.request_started()

    drainer =
      spawn(fn ->
        Shutdown.drain(wait: fn -> :ok end, stop: fn -> send(test, :stopped) end)
      end)

    ref = Process.monitor(drainer)
    refute_receive :stopped, 300
    Shutdown.request_finished()
    assert_receive :stopped, 5_000
    assert_receive {:DOWN, ^ref, :process, ^drainer, :normal}
  end

  test "uninstall puts OTP's handler back" do
    :ok = Shutdown.install(drain_options(self()))
    assert Coordination.Shutdown.SignalHandler in :gen_event.which_handlers(:erl_signal_server)
    :ok = Shutdown.uninstall()
    handlers = :gen_event.which_handlers(:erl_signal_server)
    assert :erl_signal_handler in handlers
    refute Coordination.Shutdown.SignalHandler in handlers
  end
end
