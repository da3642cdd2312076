defmodule Coordination.JSONTest do
  use ExUnit.Case, async: true

  alias Coordination.JSON

  test "decodes scalars" do
    assert JSON.decode("true") == {:ok, true}
    assert JSON.decode("false") == {:ok, false}
    assert JSON.decode("null") == {:ok, nil}
    assert JSON.decode(" 42 ") == {:ok, 42}
    assert JSON.decode("-0") == {:ok, 0}
    assert JSON.decode("-12.5") == {:ok, -12.5}
    assert JSON.decode("1e3") == {:ok, 1000.0}
    assert JSON.decode("2.5E-1") == {:ok, 0.25}
    assert JSON.decode("123456789012345678901234567890") == {:ok, 123_456_789_012_345_678_901_234_567_890}
  end

  test "decodes strings with every escape" do
    assert JSON.decode(~S("a\"b\\c\/d\b\f\n\r\t")) == {:ok, "a\"b\\c/d\b\f\n\r\t"}
    assert JSON.decode(~S("\u00e9\u20AC")) == {:ok, "é€"}
    # A surrogate pair: U+1F600.
    assert JSON.decode(~S("\ud83d\ude00")) == {:ok, "😀"}
    assert JSON.decode(~S("raw é and 😀")) == {:ok, "raw é and 😀"}
  end

  test "decodes nested objects and arrays" do
    text = ~S({"a": [1, 2, {"b": null}], "c": {"d": "e"}, "f": [], "g": {}})
    assert JSON.decode(text) == {:ok, %{"a" => [1, 2, %{"b" => nil}], "c" => %{"d" => "e"}, "f" => [], "g" => %{}}}
  end

  test "rejects malformed input with a position" do
    for bad <- [
          "",
          "{",
          "[1,]",
          "{\"a\" 1}",
          "{a: 1}",
          "01",
          "1.",
          "-",
          "1e",
          "\"abc",
          "\"\\x\"",
          "tru",
          "[1] 2",
          "\"\\ud83d\"",
          "\"\\udc00\"",
          "\"\\u12G4\"",
          "\"a\nb\"",
          "{\"a\":1,}",
          <<34, 255, 34>>
        ] do
      assert {:error, %JSON.DecodeError{message: message, position: position}} = JSON.decode(bad),
             "expected #{inspect(bad)} to be rejected"

      assert is_integer(position) and message =~ "at byte"
    end
  end

  test "encodes values" do
    assert JSON.encode!(nil) == "null"
    assert JSON.encode!(true) == "true"
    assert JSON.encode!(:pending) == ~S("pending")
    assert JSON.encode!(12) == "12"
    assert JSON.encode!(0.1) == "0.1"
    assert JSON.encode!([1, "a", nil]) == ~S([1,"a",null])
    assert JSON.encode!(%{b: 1, a: [%{}]}) == ~S({"a":[{}],"b":1})
  end

  test "escapes strings" do
    assert JSON.encode!("q\"b\\n\n\t\r\b\f\u0001") == ~S("q\"b\\n\n\t\r\b\f\u0001")
    assert JSON.encode!("é😀") == ~S("é😀")
    assert JSON.encode!("\u2028") == ~S("\u2028")
  end

  test "refuses values JSON cannot represent" do
    assert_raise ArgumentError, fn -> JSON.encode!({:tuple}) end
    assert_raise ArgumentError, fn -> JSON.encode!(<<255>>) end
  end

  test "round-trips" do
    value = %{
      "list" => [1, -2.5, true, false, nil],
      "text" => "line\nquote\" \u00e9 😀 \u0000",
      "nested" => %{"k" => []}
    }

    assert value |> JSON.encode!() |> JSON.decode!() == value
  end
end
