package sim

import "strconv"

// AppendJSON appends s as a JSON object of signals, the shape the MQTT source decodes with
// its default payload fields: the sample time in Unix milliseconds under "ts", then one key
// per signal of the machine's kind (see Kind.Signals), for example
//
//	{"ts":1700000000123,"temperature":41.235,"vibration_rms":1.8123,"current":9.876,"pressure":4.0123,"speed":2931.4}
//
// The label is not encoded: it is the ground truth, not a measurement. AppendJSON allocates
// nothing when dst has room.
func (s Sample) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"ts":`...)
	dst = strconv.AppendInt(dst, s.Time.UnixMilli(), 10)
	dst = appendField(dst, SignalTemperature, s.Signals.Temperature, 3)
	dst = appendField(dst, SignalVibrationRMS, s.Signals.VibrationRMS, 4)
	dst = appendField(dst, SignalCurrent, s.Signals.Current, 3)
	if kinds[s.Kind].pressure > 0 {
		dst = appendField(dst, SignalPressure, s.Signals.Pressure, 4)
	}
	dst = appendField(dst, SignalSpeed, s.Signals.Speed, 1)
	return append(dst, '}')
}

// appendField appends `,"name":value` with prec decimals. The model's values are always
// finite.
func appendField(dst []byte, name string, v float64, prec int) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return strconv.AppendFloat(dst, v, 'f', prec, 64)
}
